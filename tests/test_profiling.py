"""Parameter, MAC, size and latency counts of profiling.py against hand-computed values."""

from __future__ import annotations

import pytest
from torch import nn

from lightning_advkd import profiling
from lightning_advkd.profiling import count_macs, count_parameters, profile_model, serialized_size


def lenet_like() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),  # 6x24x24 out: 6*24*24*25 MACs
        nn.Conv2d(6, 16, 5, groups=2), nn.ReLU(), nn.MaxPool2d(2),  # 16x8x8 out: 16*8*8*(3*25) MACs
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),  # 256*10 MACs
    )  # fmt: skip


def test_macs_and_parameters_by_hand():
    model = lenet_like()
    assert count_macs(model, (1, 28, 28)) == 6 * 24 * 24 * 25 + 16 * 8 * 8 * 75 + 256 * 10
    assert count_parameters(model) == (6 * 25 + 6) + (16 * 75 + 16) + (256 * 10 + 10)
    assert not any(m._forward_hooks for m in model.modules())  # counting hooks are removed


def test_profile_of_a_model():
    model = lenet_like()
    result = profile_model(model, (1, 28, 28), repeats=3)
    assert result.parameters == count_parameters(model)
    assert 4 * result.parameters < result.size_bytes == serialized_size(model) < 4 * result.parameters + 4096
    assert result.latency_ms > 0
    assert model.training  # mode restored


def test_latency_refuses_a_model_off_the_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(profiling, "_device", lambda model: torch.device("cuda"))
    with pytest.raises(ValueError, match=r"model\.cpu"):
        profiling.cpu_latency_ms(nn.Linear(2, 2), (2,))
