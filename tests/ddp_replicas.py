"""Shared by the DDP tests: a callback that saves every replica's trainable state, and the run they check.

Run as a script (``python ddp_replicas.py OUT_DIR STRATEGY``) for strategies that must not start inside pytest.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from tiny_networks import make_loader, make_networks

from lightning_advkd import AdversarialDistillation, AdversarialSamples


class SaveReplicaState(Callback):
    """Writes ``rank<R>.pt`` with the student, adapter and discriminator weights of each process after training."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_fit_start(self, trainer: L.Trainer, pl_module: AdversarialDistillation) -> None:
        self._save(trainer, pl_module, "init")

    def on_train_end(self, trainer: L.Trainer, pl_module: AdversarialDistillation) -> None:
        self._save(trainer, pl_module, "end")

    def _save(self, trainer: L.Trainer, pl_module: AdversarialDistillation, tag: str) -> None:
        trainable = {
            k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items() if not k.startswith("teacher.")
        }
        counters = (pl_module.student_step, pl_module.discriminator_step)
        torch.save(
            {"state": trainable, "counters": counters}, Path(self.out_dir) / f"{tag}_rank{trainer.global_rank}.pt"
        )


def run(out_dir: str, strategy: str) -> None:
    L.seed_everything(0, verbose=False)
    teacher, student = make_networks()
    module = AdversarialDistillation(teacher, student)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        callbacks=[AdversarialSamples(adaptive_threshold=0.6), SaveReplicaState(out_dir)],
    )  # fmt: skip
    trainer.fit(module, make_loader(n=64, batch_size=8, shuffle=True), make_loader(n=16, batch_size=8))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
