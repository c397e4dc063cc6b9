"""Tests of ``lightning_advkd.discriminator``: the MLP discriminator's architecture, argument checks and ``judge``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_advkd.discriminator import MLPDiscriminator, judge


def linear_shapes(d: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in d.modules() if isinstance(m, nn.Linear)]


def test_default_widths_are_128_256_128_1() -> None:
    d = MLPDiscriminator(64)
    assert d.in_features == 64
    assert linear_shapes(d) == [(64, 128), (128, 256), (256, 128), (128, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in d.modules()) == 3
    assert not any(isinstance(m, nn.Dropout) for m in d.modules())
    # layer order: Linear, ReLU, Linear, ReLU, Linear, ReLU, Linear (raw logit, no activation at the end)
    kinds = [type(m) for m in d.net]
    assert kinds == [nn.Linear, nn.ReLU] * 3 + [nn.Linear]


def test_parameter_count_for_64_inputs() -> None:
    # (64*128 + 128) + (128*256 + 256) + (256*128 + 128) + (128*1 + 1) = 8320 + 33024 + 32896 + 129
    d = MLPDiscriminator(64)
    assert sum(p.numel() for p in d.parameters()) == 74369
    assert sum(p.numel() for p in d.parameters() if p.requires_grad) == 74369


def test_custom_hidden_widths() -> None:
    d = MLPDiscriminator(10, hidden=(32, 16))
    assert linear_shapes(d) == [(10, 32), (32, 16), (16, 1)]
    assert sum(p.numel() for p in d.parameters()) == (10 * 32 + 32) + (32 * 16 + 16) + (16 + 1)


def test_no_hidden_layers_is_a_linear_probe() -> None:
    d = MLPDiscriminator(10, hidden=())
    assert linear_shapes(d) == [(10, 1)]
    assert d(torch.randn(4, 10)).shape == (4, 1)


def test_dropout_layers_follow_each_hidden_activation() -> None:
    d = MLPDiscriminator(64, dropout=0.25)
    dropouts = [m for m in d.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3
    assert all(m.p == 0.25 for m in dropouts)
    kinds = [type(m) for m in d.net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout] * 3 + [nn.Linear]
    # dropout does not change the parameter count
    assert sum(p.numel() for p in d.parameters()) == 74369


def test_dropout_is_active_in_train_and_off_in_eval() -> None:
    torch.manual_seed(0)
    d = MLPDiscriminator(16, dropout=0.5)
    x = torch.randn(8, 16)
    d.train()
    assert not torch.equal(d(x), d(x))
    d.eval()
    torch.testing.assert_close(d(x), d(x), rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 7])
def test_output_shape_is_one_raw_logit_per_sample(batch: int) -> None:
    torch.manual_seed(0)
    d = MLPDiscriminator(64)
    out = d(torch.randn(batch, 64))
    assert out.shape == (batch, 1)
    # raw logits: a big input produces values outside (0, 1)
    assert d(1000 * torch.randn(32, 64)).abs().max() > 1


def test_gradient_reaches_every_parameter() -> None:
    d = MLPDiscriminator(8, hidden=(4, 4))
    d(torch.randn(5, 8)).sum().backward()
    assert all(p.grad is not None for p in d.parameters())


@pytest.mark.parametrize("in_features", [0, -3])
def test_rejects_non_positive_in_features(in_features: int) -> None:
    with pytest.raises(ValueError, match=f"in_features must be positive, got {in_features}"):
        MLPDiscriminator(in_features)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_rejects_dropout_outside_0_1(dropout: float) -> None:
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        MLPDiscriminator(64, dropout=dropout)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_rejects_zero_hidden_width() -> None:
    with pytest.raises(ValueError, match="hidden"):
        MLPDiscriminator(64, hidden=(128, 0))


def test_judge_gives_each_batch_the_logits_of_its_own_forward_pass() -> None:
    torch.manual_seed(0)
    d = MLPDiscriminator(16)
    batches = [torch.randn(5, 16), torch.randn(3, 16), torch.randn(4, 16)]
    judged = judge(d, *batches)
    assert [len(logits) for logits in judged] == [5, 3, 4]
    for logits, batch in zip(judged, batches, strict=True):
        torch.testing.assert_close(logits, d(batch))


def test_judge_keeps_batchnorm_statistics_of_teacher_and_student_apart() -> None:
    torch.manual_seed(0)
    d = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).train()
    real, fake = torch.randn(6, 16) + 3.0, torch.randn(6, 16)  # different means: mixing them would show
    real_logits, fake_logits = judge(d, real, fake)
    assert torch.equal(real_logits, d(real)) and torch.equal(fake_logits, d(fake))
    assert not torch.allclose(d(torch.cat([real, fake]))[:6], real_logits)  # the control: a mixed batch differs
