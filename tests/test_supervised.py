"""SupervisedClassifier: learning, metrics against a hand count, the schedule's scaling, checkpoints that reload."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from lightning_advkd.data import FashionMNISTDataModule
from lightning_advkd.supervised import SupervisedClassifier, load_model_from_checkpoint


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_learnable_fmnist(folder: Path, n_train: int = 64, n_test: int = 40) -> Path:
    """Fashion-MNIST-format files whose class k shows a bright 6x6 patch at a position set by k, on noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, k in enumerate(labels):
            row, col = 2 + 8 * (k // 3), 2 + 8 * (k % 3)
            images[i, row : row + 6, col : col + 6] = 255
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return folder


class TinyCNN(nn.Module):
    """Two strided convolutions with BatchNorm (so buffers are checkpointed too), a 4x4 pooled map, a linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.fc = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def make_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run several times faster on one thread, and much faster when other jobs share the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def datamodule(tmp_path: Path) -> FashionMNISTDataModule:
    return FashionMNISTDataModule(write_learnable_fmnist(tmp_path / "fm"), batch_size=16, augment=False)


@pytest.mark.filterwarnings("ignore:You requested to overfit")
def test_overfits_a_batch_and_the_checkpoint_reloads_bit_exact(tmp_path, datamodule) -> None:
    torch.manual_seed(0)
    module = SupervisedClassifier(TinyCNN(), num_classes=10, lr=0.05, milestones=())
    recorder = LossRecorder()
    trainer = make_trainer(
        tmp_path,
        max_steps=30,
        overfit_batches=1,
        enable_checkpointing=True,
        callbacks=[recorder],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    assert len(recorder.losses) == 30
    assert recorder.losses[-1] < 0.1 * recorder.losses[0], recorder.losses

    path = trainer.checkpoint_callback.best_model_path
    assert path and Path(path).is_file()
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"] and all(k.startswith("model.") for k in checkpoint["state_dict"])
    assert "model" not in checkpoint["hyper_parameters"] and checkpoint["hyper_parameters"]["lr"] == 0.05

    trained = module.model.state_dict()
    for fresh in (
        load_model_from_checkpoint(path, TinyCNN()),
        SupervisedClassifier.load_model_from_checkpoint(path, TinyCNN()),
        SupervisedClassifier.load_from_checkpoint(path, model=TinyCNN()).model,
    ):
        reloaded = fresh.state_dict()
        assert reloaded.keys() == trained.keys()
        assert all(torch.equal(reloaded[k], trained[k]) for k in trained)  # includes BatchNorm running stats
        x = torch.randn(4, 1, 28, 28)
        assert torch.equal(fresh.eval()(x), module.model.eval()(x))


def test_metrics_match_a_hand_count(tmp_path, datamodule) -> None:
    torch.manual_seed(0)
    module = SupervisedClassifier(TinyCNN(), num_classes=10, milestones=())
    trainer = make_trainer(tmp_path, max_epochs=3)
    trainer.fit(module, datamodule=datamodule)
    logged = set(trainer.callback_metrics)
    assert {"train/loss", "train/student_acc", "val/loss", "val/student_acc", "val/student_acc_top5"} <= logged
    assert {"train/acc", "val/acc", "val/acc_top5"} <= logged, "the deprecated names are still logged"
    (val,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    (test,) = trainer.test(module, datamodule=datamodule, verbose=False)
    assert {"test/loss", "test/student_acc", "test/student_acc_top5", "test/acc", "test/acc_top5"} <= set(test)

    module.eval()
    with torch.no_grad():
        images, labels = map(torch.cat, zip(*list(datamodule.test_dataloader()), strict=True))
        logits = module(images)
    top1 = (logits.argmax(1) == labels).float().mean().item()
    top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean().item()
    loss = nn.functional.cross_entropy(logits, labels).item()
    # val_split=0: validation runs on the test set, so both report the same numbers.
    for metrics, stage in ((val, "val"), (test, "test")):
        assert metrics[f"{stage}/student_acc"] == pytest.approx(top1, abs=1e-6)
        assert metrics[f"{stage}/student_acc_top5"] == pytest.approx(top5, abs=1e-6)
        assert metrics[f"{stage}/acc"] == metrics[f"{stage}/student_acc"]
        assert metrics[f"{stage}/acc_top5"] == metrics[f"{stage}/student_acc_top5"]
        assert metrics[f"{stage}/loss"] == pytest.approx(loss, rel=1e-4)  # batch means weighted by batch size


def _final_lr(module: SupervisedClassifier) -> float:
    return module.trainer.optimizers[0].param_groups[0]["lr"]


def test_fractional_milestones_follow_the_length_of_the_run(tmp_path, datamodule) -> None:
    # 64 images / batch 16 = 4 steps per epoch; 4 epochs = 16 steps; fractions 0.5, 0.75 -> steps 8 and 12.
    module = SupervisedClassifier(TinyCNN(), num_classes=10, lr=0.1, milestones=(0.5, 0.75), gamma=0.5)
    trainer = make_trainer(tmp_path, max_epochs=4, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    scheduler = trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step" and sorted(scheduler.scheduler.milestones) == [8, 12]
    assert _final_lr(module) == pytest.approx(0.1 * 0.25)
    # The same fractions under max_steps: 10 steps -> milestones 5 and 8 (round(7.5) = 8).
    module = SupervisedClassifier(TinyCNN(), num_classes=10, lr=0.1, milestones=(0.5, 0.75), gamma=0.5)
    trainer = make_trainer(tmp_path, max_steps=10, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    assert sorted(trainer.lr_scheduler_configs[0].scheduler.milestones) == [5, 8]


def test_default_schedule_is_the_community_recipe_at_240_epochs() -> None:
    module = SupervisedClassifier(TinyCNN(), num_classes=10)
    assert (module.hparams.lr, module.hparams.momentum, module.hparams.weight_decay) == (0.05, 0.9, 5e-4)
    assert module.hparams.nesterov is False and module.hparams.gamma == 0.1
    steps_per_epoch = 782  # CIFAR, batch 64
    assert [round(f * 240 * steps_per_epoch) for f in module.hparams.milestones] == [
        e * steps_per_epoch for e in (150, 180, 210)
    ]


def test_int_milestones_are_epochs(tmp_path, datamodule) -> None:
    module = SupervisedClassifier(TinyCNN(), num_classes=10, lr=0.1, milestones=[1, 2], gamma=0.5)
    trainer = make_trainer(tmp_path, max_epochs=3, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.lr_scheduler_configs[0].interval == "epoch"
    assert _final_lr(module) == pytest.approx(0.1 * 0.25)


def test_factories_replace_the_defaults_and_lambdas_do_not_break_checkpoints(tmp_path, datamodule) -> None:
    module = SupervisedClassifier(
        TinyCNN(),
        num_classes=10,
        label_smoothing=0.1,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    trainer = make_trainer(tmp_path, max_epochs=2, limit_val_batches=0, enable_checkpointing=True)
    trainer.fit(module, datamodule=datamodule)
    assert isinstance(trainer.optimizers[0], torch.optim.Adam)
    assert _final_lr(module) == pytest.approx(1e-3 * 0.25)
    path = trainer.checkpoint_callback.best_model_path
    assert torch.load(path, weights_only=True)["hyper_parameters"]["label_smoothing"] == 0.1


def test_unbounded_run_with_fractional_milestones_fails_clearly(tmp_path, datamodule) -> None:
    module = SupervisedClassifier(TinyCNN(), num_classes=10)
    trainer = make_trainer(tmp_path, max_epochs=-1, max_steps=-1)
    with pytest.raises(ValueError, match="fractional milestones need a bounded run"):
        trainer.fit(module, datamodule=datamodule)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"milestones": (100, 0.5)}, "all ints"),
        ({"milestones": (0.5, 1.5)}, "all ints"),
        ({"milestones": (180, 150)}, "increasing"),
        ({"milestones": (-1, 5)}, ">= 0"),
        ({"lr": 0.0}, "lr"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"num_classes": 0}, "num_classes"),
        ({"scheduler_interval": "batch"}, "scheduler_interval"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        SupervisedClassifier(TinyCNN(), **{"num_classes": 10, **kwargs})


def test_loading_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_model_from_checkpoint(tmp_path / "none.ckpt", TinyCNN())
    torch.save({"state_dict": {"student.fc.weight": torch.zeros(10, 16)}}, tmp_path / "other.ckpt")
    with pytest.raises(KeyError, match=r"no 'model\.' keys"):
        load_model_from_checkpoint(tmp_path / "other.ckpt", TinyCNN())
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in TinyCNN(num_classes=5).state_dict().items()}}, tmp_path / "a.ckpt"
    )
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model_from_checkpoint(tmp_path / "a.ckpt", TinyCNN(num_classes=10))


def test_channels_last_trains_and_gives_the_same_logits(datamodule) -> None:
    torch.manual_seed(0)
    net = TinyCNN()
    reference = SupervisedClassifier(TinyCNN(), num_classes=10)
    reference.model.load_state_dict(net.state_dict())
    fast = SupervisedClassifier(net, num_classes=10, channels_last=True)
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(fast.eval()(x), reference.eval()(x))
