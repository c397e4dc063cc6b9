"""Helpers the tests share: a quiet one-device Trainer fit, weight snapshots and their comparison, a default module.

Test files import these from here, never from one another.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from tiny_networks import make_networks
from torch import nn
from torch.utils.data import DataLoader

from lightning_advkd import AdversarialDistillation


def fit(
    module: L.LightningModule, loader: DataLoader, val_loader: DataLoader | None = None, **kwargs: Any
) -> L.Trainer:
    """Fit ``module`` for one epoch on the CPU without logger, checkpoints or progress bar; ``kwargs`` override."""
    options = dict(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
    )  # fmt: skip
    options.update(kwargs)
    trainer = L.Trainer(**options)
    trainer.fit(module, loader, val_loader)
    return trainer


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the module's state dict (weights and buffers)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Assert that two state snapshots have the same keys and bit-identical tensors (the failing key named)."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_same_tree(got, want) -> None:
    """Same structure, types, dtypes and values, bit for bit."""
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert sorted(got) == sorted(want)
        for key in want:
            assert_same_tree(got[key], want[key])
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert_same_tree(a, b)
    elif isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want)
    else:
        assert got == want


def build(seed: int = 0, **kwargs: Any) -> AdversarialDistillation:
    """An ``AdversarialDistillation`` of the tiny teacher and student made with ``seed``; ``kwargs`` go to it."""
    teacher, student = make_networks(seed)
    return AdversarialDistillation(teacher, student, **kwargs)
