"""The app's checkpoints: atomic writes, ``last.ckpt`` refreshed at every epoch end whatever the accuracy did."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_advkd import AtomicCheckpointIO
from lightning_advkd.app.callback_list import instantiate_callbacks
from lightning_advkd.app.config import build

MakeCfg = Callable[..., DictConfig]


class FallingAccuracy(L.LightningModule):
    """A linear model whose logged validation accuracy falls every epoch: 0.9, 0.5, 0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/student_acc", 0.9 - 0.4 * self.current_epoch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    return DataLoader(data, batch_size=4)


def test_last_checkpoint_holds_the_latest_epoch_when_accuracy_falls(make_cfg: MakeCfg, tmp_path: Path) -> None:
    quiet = ("callbacks.progress_bar=null", "callbacks.feature_projection=null", "callbacks.collapse_guard=null")
    cfg = make_cfg("logger=none", "trainer.max_epochs=3", "regularizer=none", *quiet)
    callbacks = instantiate_callbacks(cfg, has_logger=False)
    trainer = build("trainer", cfg.trainer, callbacks=callbacks, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    trainer.fit(FallingAccuracy(), train_dataloaders=_loader(), val_dataloaders=_loader())

    folder = tmp_path / "run" / "checkpoints"
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6), "the third epoch, though its accuracy was the worst"
    assert trainer.checkpoint_callback is not None
    assert Path(trainer.checkpoint_callback.best_model_path).name == "epoch_000.ckpt"
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["epoch_000.ckpt", "epoch_000.ckpt.sha256", "last.ckpt", "last.ckpt.sha256"], "no temp files"
