"""The building blocks of the entry point, one by one: teacher cache keys and files, checks, summary, plots, data."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.types import RunMode
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_advkd import AdversarialDistillation
from lightning_advkd.app.compat import DatasetShape, IncompatibleConfigError, check_compatibility
from lightning_advkd.app.data import TeacherOutputDataModule
from lightning_advkd.app.launch import check_launch
from lightning_advkd.app.plots import FeatureProjectionPlot, pca_projection
from lightning_advkd.app.summary import build_reports, format_table, standalone
from lightning_advkd.app.teachers import (
    MissingTeacherError,
    cached_teacher_path,
    load_teacher,
    read_teacher_meta,
    recipe_key,
    save_teacher,
    teacher_recipe,
)
from lightning_advkd.data import FashionMNISTDataModule
from lightning_advkd.features import FeatureTap
from lightning_advkd.models import create_model

from .conftest import compose_cfg, tiny_overrides

# ---------------------------------------------------------------------------------------------------- teacher cache


def recipe(**changes: object) -> dict:
    base = {
        "dataset": {
            "_target_": "lightning_advkd.data.FashionMNISTDataModule",
            "data_dir": "/data/fmnist",
            "batch_size": 128,
            "augment": True,
            "num_workers": 0,
            "seed": 0,
        },
        "model": {"_target_": "lightning_advkd.models.create_model", "name": "resnet14"},
        "module": {"lr": 0.1, "milestones": [0.5, 0.75]},
        "trainer": {"max_epochs": 3, "devices": 1, "logger": True, "enable_progress_bar": True},
        "seed": 0,
        "num_classes": 10,
        "in_chans": 1,
    }
    for path, value in changes.items():
        node = base
        *parents, leaf = path.split("__")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return teacher_recipe(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"dataset__data_dir": "/data/other"},
        {"dataset___target_": "lightning_advkd.data.CIFAR10DataModule"},
        {"dataset__augment": False},
        {"dataset__batch_size": 64},
        {"model__name": "resnet20"},
        {"module__lr": 0.05},
        {"trainer__max_epochs": 4},
        {"trainer__devices": 2},
        {"seed": 1},
        {"num_classes": 100},
    ],
    ids=lambda change: next(iter(change)),
)
def test_teacher_key_changes_with_what_decides_the_weights(change: dict) -> None:
    assert recipe_key(recipe(**change)) != recipe_key(recipe())


@pytest.mark.parametrize(
    "change",
    [{"dataset__num_workers": 4}, {"trainer__logger": False}, {"trainer__enable_progress_bar": False}],
    ids=lambda change: next(iter(change)),
)
def test_teacher_key_ignores_how_data_is_loaded_and_shown(change: dict) -> None:
    assert recipe_key(recipe(**change)) == recipe_key(recipe())


def test_relative_data_dirs_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert recipe(dataset__data_dir="data")["dataset"]["data_dir"] == str(tmp_path / "data")


def test_teacher_file_round_trip(tmp_path: Path) -> None:
    teacher = create_model("resnet8", num_classes=10, in_chans=1)
    path = cached_teacher_path(tmp_path, "tv_resnet/odd name", "0123456789abcdef")
    assert path.parent == tmp_path / "teachers" and path.name == "tv_resnet_odd_name-0123456789abcdef.ckpt"
    save_teacher(teacher, path, {"key": "0123456789abcdef", "val_acc": 0.5})
    assert read_teacher_meta(path) == {"key": "0123456789abcdef", "val_acc": 0.5}
    assert not list(path.parent.glob(".*.tmp")), "written atomically, no leftovers"
    fresh = load_teacher(create_model("resnet8", num_classes=10, in_chans=1), path, how_to_train="train it")
    for key, value in teacher.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    with pytest.raises(MissingTeacherError, match="train it"):
        load_teacher(fresh, tmp_path / "missing.ckpt", how_to_train="train it")
    with pytest.raises(IncompatibleConfigError, match="100 classes"):
        load_teacher(create_model("resnet8", num_classes=100, in_chans=1), path, how_to_train="x")


# ---------------------------------------------------------------------------------------------------- checks


FMNIST = DatasetShape("fashion_mnist", 1, 28, 10)
ANC = {"name": "anc", "module": {"_target_": "lightning_advkd.AdversarialDistillation"}}
KD = "lightning_advkd.distillation.KnowledgeDistillation"


def pair(**extra: object) -> dict:
    return {
        "name": "p",
        "input_size": [1, 28, 28],
        "teacher": {"model": {"name": "resnet14"}},
        "student": {"model": {"name": "lenet5"}},
        **extra,
    }


def test_compatible_pair_passes() -> None:
    check_compatibility(pair(), FMNIST, ANC, "distill")


@pytest.mark.parametrize(
    ("dataset", "pair_extra", "method", "task", "message"),
    [
        (DatasetShape("cifar10", 3, 32, 10), {}, ANC, "distill", "3-channel images"),
        (FMNIST, {"num_classes": 1000}, ANC, "distill", "1000 classes, the dataset has 10"),
        (DatasetShape("u", 1, 28, None), {}, ANC, "distill", "set pair.num_classes"),
        (DatasetShape("u", 1, 28, None), {"num_classes": 10}, ANC, "distill", "set pair.teacher.checkpoint"),
        (
            DatasetShape("u", 1, 28, None),
            {"num_classes": 10, "teacher": {"model": {"name": "resnet14"}, "checkpoint": "t.ckpt"}},
            {"name": "supervised", "module": {"_target_": "lightning_advkd.app.methods.StudentAlone.from_pair"}},
            "distill",
            "needs labels",
        ),
        (
            DatasetShape("u", 1, 28, None),
            {"num_classes": 10, "teacher": {"model": {"name": "resnet14"}, "checkpoint": "t.ckpt"}},
            {"name": "kd_labels", "module": {"_target_": KD, "label_weight": 0.5}},
            "distill",
            "needs labels",
        ),
        (
            FMNIST,
            {"attention_pairs": []},
            {"name": "attention", "module": {"_target_": KD, "attention_weight": 100.0}},
            "distill",
            "needs pair.attention_pairs",
        ),
    ],
)
def test_incompatible_configs_are_named(dataset, pair_extra, method, task, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IncompatibleConfigError, match=message):
        check_compatibility(pair(**pair_extra), dataset, method, task)


def test_multirun_with_subprocess_ddp_is_refused(tmp_path: Path, data_root: Path) -> None:
    overrides = [*tiny_overrides(data_root), "strategy=ddp_cpu2"]
    check_launch(compose_cfg(overrides, tmp_path / "single"))  # a single run is fine
    with pytest.raises(IncompatibleConfigError, match="re-runs the whole sweep"):
        check_launch(compose_cfg(overrides, tmp_path / "sweep" / "0", mode=RunMode.MULTIRUN))
    check_launch(compose_cfg([*overrides, "trainer.strategy=ddp_spawn"], tmp_path / "sweep" / "1", RunMode.MULTIRUN))


# ---------------------------------------------------------------------------------------------------- summary


def test_standalone_copy_has_no_feature_hooks() -> None:
    model = create_model("lenet5")
    tap = FeatureTap(model, None)
    hooks = {name: dict(m._forward_hooks) for name, m in model.named_modules()}
    copy = standalone(model)
    assert all(not m._forward_hooks for m in copy.modules()) and not copy.training
    assert {name: dict(m._forward_hooks) for name, m in model.named_modules()} == hooks, "the original is untouched"
    tap.remove()


def test_reports_and_table() -> None:
    teacher, student = create_model("resnet8", num_classes=10, in_chans=1), create_model("lenet5")
    metrics = {"test/teacher_acc": 0.9, "test/student_acc": 0.8, "test/agreement": 0.85}
    reports = build_reports(teacher, student, {"teacher": "resnet8", "student": "lenet5"}, metrics, (1, 28, 28), 2)
    assert [r.role for r in reports] == ["teacher", "student"]
    assert reports[1].profile.parameters == 61_706 and reports[1].agreement == 0.85 and reports[0].agreement is None
    table = format_table(reports, "title")
    assert "| student | lenet5 | 80.00" in table.replace("  ", " ") or "80.00" in table
    assert f"{77_754 / 61_706:.1f}x" in table


# ---------------------------------------------------------------------------------------------------- plots


def test_pca_projects_onto_the_reference_axes() -> None:
    torch.manual_seed(0)
    reference = torch.randn(200, 3) * torch.tensor([5.0, 1.0, 0.1])
    shifted = reference + torch.tensor([10.0, 0.0, 0.0])
    projected_ref, projected_shift = pca_projection(reference, shifted)
    assert projected_ref.mean(0).abs().max() < 1e-4
    assert (projected_shift - projected_ref).abs()[:, 0].mean() == pytest.approx(10.0, rel=1e-3)


def test_feature_projection_callback_writes_pngs(tmp_path: Path) -> None:
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    module = AdversarialDistillation(teacher, student)
    data = TensorDataset(torch.randn(40, 16), torch.arange(40) % 3)
    plot = FeatureProjectionPlot(tmp_path / "plots", every_n_epochs=2, num_samples=25)
    trainer = L.Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[plot],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=10), DataLoader(data, batch_size=10))
    assert [p.name for p in plot.saved] == ["feature_projection_epoch001.png", "feature_projection_epoch003.png"]
    assert all(p.stat().st_size > 1000 for p in plot.saved)
    with pytest.raises(ValueError, match="every_n_epochs"):
        FeatureProjectionPlot(tmp_path, every_n_epochs=0)


# ---------------------------------------------------------------------------------------------------- data


def test_teacher_output_datamodule_serves_the_teachers_exact_outputs(data_root: Path, tmp_path: Path) -> None:
    inner = FashionMNISTDataModule(data_root / "fashion-mnist", batch_size=8, eval_batch_size=16, augment=False)
    teacher = create_model("resnet8", num_classes=10, in_chans=1).eval()
    data = TeacherOutputDataModule(inner, teacher, cache_dir=tmp_path, batch_size=32, progress=False)
    assert (data.num_classes, data.in_chans, data.image_size) == (10, 1, 28)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (8, 1, 28, 28) and batch["label"].shape == (8,)
    with torch.no_grad():
        assert torch.allclose(teacher(batch["image"]), batch["teacher_logits"], atol=1e-5)
    assert list(tmp_path.glob("teacher-outputs-*.pt")), "kept on disk for the next run"
    data.setup("test")
    assert len(next(iter(data.test_dataloader()))["image"]) == 16
    state = data.state_dict()
    first = next(iter(data.train_dataloader()))["label"]
    data.load_state_dict(state)
    assert torch.equal(next(iter(data.train_dataloader()))["label"], first), "shuffling order is resumable"


def test_teacher_output_datamodule_refuses_augmented_data(data_root: Path) -> None:
    inner = FashionMNISTDataModule(data_root / "fashion-mnist", batch_size=8, augment=True)
    data = TeacherOutputDataModule(inner, create_model("resnet8", num_classes=10, in_chans=1), progress=False)
    with pytest.raises(ValueError, match="random augmentation"):
        data.setup("fit")


def test_resolved_config_has_no_interpolations(tmp_path: Path, data_root: Path) -> None:
    cfg = compose_cfg(tiny_overrides(data_root), tmp_path)
    text = OmegaConf.to_yaml(OmegaConf.create({k: cfg[k] for k in cfg if k != "hydra"}), resolve=True)
    assert "${" not in text and f"output_dir: {tmp_path}" in text
