"""Exact resume from anywhere: a checkpoint written after batch k of an epoch resumes to the same final weights.

Never ``strategy="ddp"`` inside the pytest process: Lightning would re-run the pytest command line as rank 1; the DDP
case uses ``ddp_spawn``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from data._writers import write_fashion_mnist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from tiny_networks import make_networks
from torch import nn

from lightning_advkd import AdversarialDistillation, AdversarialSamples, AtomicCheckpointIO, R1Penalty
from lightning_advkd.data import FashionMNISTDataModule

REPO = Path(__file__).resolve().parents[1]
BATCHES_PER_EPOCH = 6  # 48 training images in batches of 8


class TinyNet(L.LightningModule):
    """Convolution, BatchNorm (running statistics), SGD with momentum: every piece of state a resume must restore."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 5, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
        )

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def datamodule(data_dir: Path) -> FashionMNISTDataModule:
    return FashionMNISTDataModule(data_dir, batch_size=8, augment=False, num_workers=0, seed=3)


def fit(
    data_dir: Path,
    root: Path,
    *,
    ckpt_path: Path | None = None,
    every: int = 0,
    callbacks: list[Callback] | None = None,
    model: Callable[[], L.LightningModule] = TinyNet,
    **trainer: object,
) -> L.LightningModule:
    """Fit ``model()`` (built after seeding) on the datamodule, with a checkpoint every ``every`` global steps."""
    L.seed_everything(0, verbose=False)
    module = model()
    callbacks = list(callbacks or [])
    if every:
        callbacks.append(ModelCheckpoint(root, "{step}", every_n_train_steps=every, save_top_k=-1))
    options = {"accelerator": "cpu", "devices": 1, "max_epochs": 3, **trainer}
    L.Trainer(
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        deterministic=True,
        **options,
    ).fit(module, datamodule=datamodule(data_dir), ckpt_path=ckpt_path)
    return module


def untrained() -> TinyNet:
    L.seed_everything(0, verbose=False)
    return TinyNet()


def max_diff(a: nn.Module, b: nn.Module) -> float:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return max((x.double() - y.double()).abs().max().item() for x, y in pairs)


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), 48, 16)


def test_mid_epoch_checkpoint_saves_the_position_within_the_epoch(fmnist: Path, tmp_path: Path) -> None:
    fit(fmnist, tmp_path, every=4)
    state = torch.load(tmp_path / "step=4.ckpt", weights_only=True)["FashionMNISTDataModule"]
    assert state["samples_done"] == 4 * 8, "step 4: four batches of the first epoch trained"
    state = torch.load(tmp_path / "step=8.ckpt", weights_only=True)["FashionMNISTDataModule"]
    assert state["samples_done"] == 2 * 8, "step 8: two batches of the second epoch"
    state = torch.load(tmp_path / "step=12.ckpt", weights_only=True)["FashionMNISTDataModule"]
    assert "samples_done" not in state, "step 12 ends the second epoch: the next one starts from its beginning"


@pytest.mark.parametrize("step", [1, 4, 8, 12, 17])
def test_resume_after_batch_k_is_bit_identical(fmnist: Path, tmp_path: Path, step: int) -> None:
    reference = fit(fmnist, tmp_path / "a", every=1)
    resumed = fit(fmnist, tmp_path / "b", ckpt_path=tmp_path / "a" / f"step={step}.ckpt")
    assert max_diff(reference, resumed) == 0.0
    assert max_diff(reference, untrained()) > 0.1, "the runs trained"


@pytest.mark.slow
def test_ddp_resume_after_batch_k_is_bit_identical(fmnist: Path, tmp_path: Path) -> None:
    ddp = {"strategy": "ddp_fork_find_unused_parameters_true", "devices": 2}
    reference = fit(fmnist, tmp_path / "a", every=2, **ddp)  # 3 batches per rank and epoch
    resumed = fit(fmnist, tmp_path / "b", ckpt_path=tmp_path / "a" / "step=4.ckpt", **ddp)
    state = torch.load(tmp_path / "a" / "step=4.ckpt", weights_only=True)["FashionMNISTDataModule"]
    assert state["samples_done"] == 8, "rank 0 had trained one batch of the second epoch"
    assert max_diff(reference, resumed) == 0.0
    assert max_diff(reference, untrained()) > 0.1, "the runs trained, and rank 0's weights came back"


class SlowAfter(Callback):
    """Marks batch ``k`` with a file, then makes every batch slow, so the test can send SIGTERM mid-epoch."""

    def __init__(self, marker: str, k: int) -> None:
        self.marker, self.k = Path(marker), k

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.k:
            self.marker.touch()
            time.sleep(0.3)


SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from test_resume import SlowAfter, fit
    from lightning_advkd.app.checkpoints import PreemptionCheckpoint
    data, root = Path(sys.argv[1]), Path(sys.argv[2])
    fit(data, root, callbacks=[PreemptionCheckpoint(root), SlowAfter(str(root / "marker"), 8)])
    """
)


def test_sigterm_saves_a_resumable_checkpoint_and_exits_non_zero(fmnist: Path, tmp_path: Path) -> None:
    root = tmp_path / "stopped"
    root.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    job = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(fmnist), str(root)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (root / "marker").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 143, stderr.decode()[-3000:]
    assert "Stopped by SIGTERM" in stderr.decode()
    checkpoint = torch.load(root / "last.ckpt", weights_only=True)
    assert 8 <= checkpoint["global_step"] < 18, "stopped mid-run"
    position = checkpoint["FashionMNISTDataModule"].get("samples_done", 0)
    assert position == (checkpoint["global_step"] % BATCHES_PER_EPOCH) * 8
    assert not [p for p in root.iterdir() if ".tmp" in p.name], "no temp files left"
    resumed = fit(fmnist, tmp_path / "resumed", ckpt_path=root / "last.ckpt")
    assert max_diff(fit(fmnist, tmp_path / "reference"), resumed) == 0.0


def adversarial_module() -> AdversarialDistillation:
    """ANC of the tiny networks, their classifiers widened to Fashion-MNIST's ten classes."""
    teacher, student = make_networks(0)
    teacher.fc, student.fc = nn.Linear(24, 10), nn.Linear(8, 10)
    return AdversarialDistillation(teacher, student)


def fit_adversarial(data_dir: Path, root: Path, *, ckpt_path: Path | None = None) -> L.LightningModule:
    """Two epochs of ANC (both optimizers, R1 and adaptive adversarial samples) with a checkpoint after every batch."""
    regularizers: list[Callback] = [R1Penalty(), AdversarialSamples(adaptive_threshold=0.51)]
    return fit(
        data_dir, root, ckpt_path=ckpt_path, every=2, callbacks=regularizers, model=adversarial_module, max_epochs=2
    )  # every=2: two optimizer steps per batch


@pytest.mark.parametrize("batch", [3, 8])
def test_adversarial_distillation_resumes_bit_identically_mid_epoch(fmnist: Path, tmp_path: Path, batch: int) -> None:
    reference = fit_adversarial(fmnist, tmp_path / "a")
    checkpoint = tmp_path / "a" / f"step={2 * batch}.ckpt"
    assert torch.load(checkpoint, weights_only=True)["FashionMNISTDataModule"]["samples_done"] > 0, "mid-epoch"
    resumed = fit_adversarial(fmnist, tmp_path / "b", ckpt_path=checkpoint)
    assert (resumed.student_step, resumed.discriminator_step) == (2 * BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH)
    assert max_diff(reference, resumed) == 0.0
