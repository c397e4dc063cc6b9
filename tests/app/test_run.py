"""The job itself, in process: the default job, the teacher cache, the tasks, the methods, and bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from data._writers import write_fashion_mnist
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from lightning_advkd.app.compat import IncompatibleConfigError
from lightning_advkd.app.teachers import MissingTeacherError
from lightning_advkd.models import create_model
from lightning_advkd.train import CONF_DIR, optimized_value, run

MakeCfg = Callable[..., DictConfig]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with path.open() as handle:
        return list(csv.DictReader(handle))


def teachers(cache: Path) -> list[Path]:
    return sorted((cache / "teachers").glob("*.ckpt"))


def test_default_job_end_to_end(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("debug=fast_dev_run", "logger=csv")
    assert (cfg.method.name, cfg.pair.name, cfg.dataset.name, list(cfg.regularizer)) == (
        "anc",
        "resnet14_lenet5",
        "fashion_mnist",
        ["r1"],
    )
    metrics = run(cfg)
    assert {"test/student_acc", "test/teacher_acc", "test/agreement", "test/d_acc_real"} <= metrics.keys()
    assert optimized_value(cfg, metrics) == metrics["test/student_acc"]
    out = tmp_path / "run"
    result = summary(out)
    teacher, student = result["models"]
    assert (teacher["role"], teacher["arch"], student["role"], student["arch"]) == (
        "teacher",
        "resnet14",
        "student",
        "lenet5",
    )
    assert result["compression_ratio"] == pytest.approx(teacher["profile"]["parameters"] / 61_706)
    for row in (teacher, student):
        assert row["profile"]["macs"] > 0 and row["profile"]["size_bytes"] > 0 and row["profile"]["latency_ms"] > 0
    assert student["agreement"] == pytest.approx(metrics["test/agreement"])
    table = (out / "summary.md").read_text()
    assert "| teacher | resnet14" in table and "compression ratio" in table
    resolved = OmegaConf.load(out / "config_resolved.yaml")
    assert resolved.method.name == "anc" and "${" not in (out / "config_resolved.yaml").read_text()
    assert resolved.paths.output_dir == str(out)
    student_net = create_model("lenet5", num_classes=10, in_chans=1)
    student_net.load_state_dict(torch.load(out / "student.pt", weights_only=True))
    assert (out / "plots" / "feature_projection_epoch000.png").stat().st_size > 1000


def test_teacher_is_trained_once_cached_and_reused(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    common = [*SHORT, "logger=none", "callbacks=none", "teacher_output_cache=false"]
    first = run(make_cfg(*common, run="first", cache=cache))
    (path,) = teachers(cache)
    assert path.name.startswith("resnet14-") and path.with_suffix(".json").is_file()
    recipe = json.loads(path.with_suffix(".json").read_text())["recipe"]
    assert recipe["model"]["name"] == "resnet14" and recipe["seed"] == 0 and recipe["dataset"]["augment"] is True
    assert summary(tmp_path / "first")["teacher"]["source"] == "trained"
    stamp = path.stat().st_mtime_ns

    second = run(make_cfg(*common, run="second", cache=cache))
    info = summary(tmp_path / "second")["teacher"]
    assert info["source"] == "cache" and info["path"] == str(path)
    assert path.stat().st_mtime_ns == stamp
    assert second["test/teacher_acc"] == first["test/teacher_acc"]
    assert second["test/student_acc"] == first["test/student_acc"], "a cached teacher reproduces the first run"

    other_data = write_fashion_mnist(tmp_path / "other-fmnist", 64, 32, seed=7)
    run(make_cfg(*common, f"dataset.datamodule.data_dir={other_data}", run="other_data", cache=cache))
    assert len(teachers(cache)) == 2, "another dataset gets its own teacher (seed and recipe: test_units)"


def test_given_teacher_checkpoint_is_used(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run(make_cfg("task=teacher", *SHORT, "logger=none", run="teacher", cache=cache))
    (path,) = teachers(cache)
    result = summary(tmp_path / "teacher")
    assert [m["role"] for m in result["models"]] == ["teacher"]
    assert result["metrics"]["test/teacher_acc"] >= 0
    metrics = run(
        make_cfg(
            *SHORT, "logger=none", f"pair.teacher.checkpoint={path}", run="distill", cache=tmp_path / "empty_cache"
        )
    )
    assert summary(tmp_path / "distill")["teacher"] == {"source": "checkpoint", "path": str(path)}
    assert metrics["test/teacher_acc"] == pytest.approx(result["metrics"]["test/teacher_acc"])
    assert not (tmp_path / "empty_cache" / "teachers").exists()


def test_evaluate_reproduces_the_test_of_the_run(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    trained = run(make_cfg(*SHORT, "logger=none", run="distill", cache=cache))
    checkpoint = tmp_path / "distill" / "checkpoints" / "last.ckpt"
    evaluated = run(make_cfg("task=evaluate", f"ckpt_path={checkpoint}", "logger=none", run="eval", cache=cache))
    for key in ("test/student_acc", "test/teacher_acc", "test/agreement"):
        assert evaluated[key] == pytest.approx(trained[key]), key
    assert summary(tmp_path / "eval")["checkpoint"] == str(checkpoint)


@pytest.mark.parametrize("method", ["supervised", "kd", "l2_logits", "hint", "attention"])
def test_every_method_trains_and_reports(method: str, make_cfg: MakeCfg, tmp_path: Path) -> None:
    metrics = run(make_cfg(f"method={method}", "debug=fast_dev_run", "logger=csv"))
    assert {"test/student_acc", "test/teacher_acc", "test/agreement"} <= metrics.keys()
    assert [m["role"] for m in summary(tmp_path / "run")["models"]] == ["teacher", "student"]


def test_attention_transfer_reads_teacher_maps_from_the_output_cache(make_cfg: MakeCfg, tmp_path: Path) -> None:
    metrics = run(make_cfg("method=attention", *SHORT, "logger=csv", "teacher_output_cache=true"))
    assert "test/student_acc" in metrics
    files = sorted((tmp_path / "run" / "cache" / "teacher_outputs").glob("teacher-outputs-*.pt"))
    assert len(files) == 2, "train and test splits"
    for path in files:
        assert {"teacher_attention:layer1", "teacher_attention:layer2"} <= set(torch.load(path, weights_only=True))


def test_augmented_training_reads_teacher_outputs_from_the_view_cache(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    common = [
        "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=csv",
        "teacher_output_cache=true", "dataset.datamodule.augment=true", "callbacks=none",
    ]  # fmt: skip
    first = run(make_cfg(*common, run="first", cache=cache))
    (folder,) = (cache / "teacher_views").iterdir()
    arrays = sorted(path.name for path in folder.glob("*.npy"))
    assert any("logits" in name for name in arrays) and any("features" in name for name in arrays), arrays
    stamps = {path: path.stat().st_mtime_ns for path in folder.glob("*.npy")}
    second = run(make_cfg(*common, run="second", cache=cache))
    assert {path: path.stat().st_mtime_ns for path in folder.glob("*.npy")} == stamps, "the cache is reused"
    assert second["test/student_acc"] == first["test/student_acc"]
    other_k = run(make_cfg(*common, "view_cache.num_views=1", run="k1", cache=cache))
    assert len(list((cache / "teacher_views").iterdir())) == 2, "another K is another cache"
    assert 0.0 <= other_k["test/student_acc"] <= 1.0


@pytest.mark.parametrize("augment", [False, True])
def test_discriminator_on_layers_reads_the_teachers_maps_from_the_caches(
    augment: bool, make_cfg: MakeCfg, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    options = [
        "method.module.discriminator_layers=${pair.attention_pairs}", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "logger=csv", "teacher_output_cache=true", f"dataset.datamodule.augment={str(augment).lower()}",
    ]  # fmt: skip
    metrics = run(make_cfg(*options, cache=cache))
    assert 0.0 <= metrics["test/student_acc"] <= 1.0
    assert "train/d_acc" in set(csv_rows(tmp_path / "run")[0])
    if augment:
        (folder,) = (cache / "teacher_views").iterdir()
        arrays = {path.name for path in folder.glob("*.npy")}
        assert any("layer1" in name for name in arrays) and any("layer2" in name for name in arrays), arrays
    else:
        for path in (cache / "teacher_outputs").glob("teacher-outputs-*.pt"):
            assert {"teacher_attention:layer1", "teacher_attention:layer2"} <= set(torch.load(path, weights_only=True))


def test_regularizers_are_attached_together(make_cfg: MakeCfg, tmp_path: Path) -> None:
    run(make_cfg("regularizer=[adversarial_samples,r1,weight_l2]", *SHORT, "logger=csv"))
    columns = set(csv_rows(tmp_path / "run")[0])
    for name in ("adversarial_samples", "r1", "weight_l2"):
        assert f"train/reg/{name}_strength" in columns
    assert {"train/d_acc", "train/d_gap", "train/loss/discriminator_reg_r1"} <= columns


def test_unregularized_baseline(make_cfg: MakeCfg, tmp_path: Path) -> None:
    run(make_cfg("regularizer=none", *SHORT, "logger=csv"))
    columns = set(csv_rows(tmp_path / "run")[0])
    assert "train/d_acc" in columns and not any(c.startswith("train/reg/") for c in columns)


def test_unknown_group_option_gives_hydras_message() -> None:
    with (
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
        pytest.raises(MissingConfigException) as error,
    ):
        compose("train", overrides=["method=adversarial"])
    message = str(error.value)
    assert "Could not find 'method/adversarial'" in message
    assert "Available options" in message and "anc" in message and "supervised" in message


def test_missing_teacher_checkpoint_says_how_to_train_one(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("pair.teacher.checkpoint=/nonexistent/teacher.ckpt", "logger=none")
    with pytest.raises(MissingTeacherError) as error:
        run(cfg)
    message = str(error.value)
    assert "/nonexistent/teacher.ckpt does not exist" in message
    assert "advkd-train task=teacher dataset=fashion_mnist pair=resnet14_lenet5" in message
    assert "pair.teacher.checkpoint=null" in message


def test_evaluate_without_a_cached_teacher_refuses_to_train_one(make_cfg: MakeCfg, tmp_path: Path) -> None:
    (tmp_path / "x.ckpt").write_bytes(b"a checkpoint file (not read: the teacher is missing first)")
    cfg = make_cfg("task=evaluate", f"ckpt_path={tmp_path / 'x.ckpt'}", "logger=none")
    with pytest.raises(MissingTeacherError, match="advkd-train task=teacher"):
        run(cfg)
    assert not (tmp_path / "run" / "cache" / "teachers").exists()


def test_evaluate_needs_a_checkpoint(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run(make_cfg("task=teacher", *SHORT, "logger=none", run="teacher", cache=cache))
    with pytest.raises(ValueError, match="task=evaluate needs ckpt_path"):
        run(make_cfg("task=evaluate", "logger=none", run="eval", cache=cache))


def test_pair_for_other_inputs_fails_before_training(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg("pair=resnet56_resnet20", "logger=none")
    with pytest.raises(IncompatibleConfigError) as error:
        run(cfg)
    message = str(error.value)
    assert "pair 'resnet56_resnet20' does not fit dataset 'fashion_mnist'" in message
    assert "3-channel inputs, the dataset yields 1-channel" in message and "32x32 inputs" in message
    assert "resnet14_lenet5" in message and "nin_lenet5" in message  # the pairs that would fit
    assert not (tmp_path / "run" / "cache").exists(), "nothing was trained"


def test_pair_with_other_class_count_fails_before_training(make_cfg: MakeCfg, tmp_path: Path) -> None:
    with pytest.raises(IncompatibleConfigError, match="the pair's networks have 100 classes, the dataset has 10"):
        run(make_cfg("pair.num_classes=100", "logger=none"))
    assert not (tmp_path / "run" / "cache").exists()


def test_teacher_checkpoint_of_another_dataset_is_refused(make_cfg: MakeCfg, tmp_path: Path) -> None:
    other = create_model("resnet14", num_classes=100, in_chans=1)
    path = tmp_path / "cifar100_teacher.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(IncompatibleConfigError, match="does not fit the teacher built for this dataset"):
        run(make_cfg(f"pair.teacher.checkpoint={path}", "logger=none"))


def test_unknown_architecture_fails_before_training(make_cfg: MakeCfg, tmp_path: Path) -> None:
    with pytest.raises(IncompatibleConfigError, match="student architecture 'lenet6' is not a known model"):
        run(make_cfg("pair.student.model.name=lenet6", "logger=none"))
