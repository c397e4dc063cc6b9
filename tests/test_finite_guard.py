"""FiniteStateGuard: non-finite gradients, weights and BatchNorm statistics are caught before a checkpoint has them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_advkd import AtomicCheckpointIO, FiniteStateGuard, NonFiniteCheckpointError, NonFiniteStateError

HUGE_BATCH = 3  # the fourth batch holds values of order 1e30


class BatchNormNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.student(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def loader() -> DataLoader:
    x = torch.randn(48, 4, generator=torch.Generator().manual_seed(0))
    # distinct huge rows: their batch variance (~1e60) overflows float32, so running_var is inf after that forward
    x[HUGE_BATCH * 8 : (HUGE_BATCH + 1) * 8] = 1e30 * torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    return DataLoader(TensorDataset(x, torch.arange(48) % 2), batch_size=8)


def fit(tmp_path: Path, *callbacks: L.Callback) -> BatchNormNet:
    torch.manual_seed(0)
    model = BatchNormNet()
    checkpoints = ModelCheckpoint(tmp_path, "last", every_n_train_steps=1, enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, checkpoints],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, train_dataloaders=loader())
    return model


def all_finite(path: Path) -> bool:
    state = torch.load(path, weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def test_stop_names_network_tensor_and_step_and_the_checkpoint_stays_finite(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteStateError, match=r"buffer student\.1\.running_var.*'student'.*step 3"):
        fit(tmp_path, FiniteStateGuard(action="stop"))
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3, "the last good step is kept"
    assert all_finite(tmp_path / "last.ckpt")


def test_without_the_guard_the_checkpoint_io_refuses(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteCheckpointError, match="running_var"):
        fit(tmp_path)
    assert all_finite(tmp_path / "last.ckpt")


def test_skip_drops_the_bad_step_and_training_goes_on(tmp_path: Path) -> None:
    guard = FiniteStateGuard(action="skip", every_n_steps=1)
    model = fit(tmp_path, guard)
    assert guard.skipped == 2, "the huge batch, once per epoch"
    assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
    assert all_finite(tmp_path / "last.ckpt")


def test_weights_are_checked_every_n_steps(tmp_path: Path) -> None:
    model = BatchNormNet()
    with torch.no_grad():
        model.student[0].weight[0, 0] = float("nan")
    guard = FiniteStateGuard(every_n_steps=2)
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    guard.on_fit_start(trainer, model)
    with pytest.raises(NonFiniteStateError, match=r"weight student\.0\.weight"):
        guard._check_state(trainer, model)


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="one of"):
        FiniteStateGuard(action="ignore")
    with pytest.raises(ValueError, match=">= 1"):
        FiniteStateGuard(every_n_steps=0)
