"""The reference Fashion-MNIST teacher shipped with the package: recorded, verified, used by the default job only."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from data._writers import write_fashion_mnist

from lightning_advkd._atomic import CorruptFileError, sha256_file
from lightning_advkd.app.teachers import REFERENCE_DIR, load_reference_teacher, reference_teacher
from lightning_advkd.data import FashionMNISTDataModule
from lightning_advkd.data.fashion_mnist import DEBIAN_DIR
from lightning_advkd.models import create_model
from lightning_advkd.train import run

from .conftest import QUICK, compose_cfg

REAL_DATA = (DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz").is_file() or (DEBIAN_DIR / "t10k-labels-idx1-ubyte").is_file()
needs_real_data = pytest.mark.skipif(not REAL_DATA, reason=f"Fashion-MNIST not installed in {DEBIAN_DIR}")
RESNET14 = {"_target_": "lightning_advkd.models.create_model", "name": "resnet14"}


def test_shipped_file_matches_its_record() -> None:
    reference = reference_teacher("fmnist_resnet14")
    assert reference.path.parent == REFERENCE_DIR and reference.path.stat().st_size < 1_000_000
    assert sha256_file(reference.path) == reference.sha256 == reference.meta["sha256"]
    assert reference.meta["test_acc"] >= 0.93 and reference.meta["bytes"] == reference.path.stat().st_size
    assert "benchmarks/discriminator_study.py --teachers-only" in reference.meta["command"]
    assert (REFERENCE_DIR / "README.md").read_text().count(reference.sha256) == 1
    model = load_reference_teacher(create_model("resnet14", num_classes=10, in_chans=1), reference)
    assert sum(p.numel() for p in model.parameters()) > 100_000  # loaded strictly: every key fits the architecture


def test_unknown_reference_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match=r"shipped: \['fmnist_resnet14'\]"):
        reference_teacher("imagenet_resnet152")


def test_damaged_file_is_refused_with_the_way_out(tmp_path: Path) -> None:
    reference = reference_teacher("fmnist_resnet14")
    damaged = tmp_path / reference.path.name
    shutil.copy(reference.path, damaged)
    with damaged.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(CorruptFileError, match=r"teacher_training\.retrain=true"):
        load_reference_teacher(
            create_model("resnet14", num_classes=10, in_chans=1), dataclasses.replace(reference, path=damaged)
        )


def test_it_stands_in_only_for_its_own_dataset_and_architecture(tmp_path: Path) -> None:
    reference = reference_teacher("fmnist_resnet14")
    write_fashion_mnist(tmp_path / "fmnist", 64, 32)
    other_data = FashionMNISTDataModule(data_dir=tmp_path / "fmnist")
    args = {"dataset": "fashion_mnist", "model": RESNET14, "num_classes": 10, "in_chans": 1}
    assert "is not the fashion_mnist" in reference.mismatch(**args, datamodule=other_data)
    assert "architecture" in reference.mismatch(**{**args, "model": {**RESNET14, "name": "resnet8"}}, datamodule=None)
    assert "architecture" in reference.mismatch(**{**args, "model": {**RESNET14, "width": 2}}, datamodule=None)
    assert "dataset" in reference.mismatch(**{**args, "dataset": "cifar10"}, datamodule=None)
    assert "num_classes" in reference.mismatch(**{**args, "num_classes": 100}, datamodule=None)
    missing = FashionMNISTDataModule(data_dir=tmp_path / "nowhere")
    assert "is not the fashion_mnist" in reference.mismatch(**args, datamodule=missing)


@needs_real_data
def test_it_matches_the_installed_fashion_mnist() -> None:
    reference = reference_teacher("fmnist_resnet14")
    args = {"dataset": "fashion_mnist", "model": RESNET14, "num_classes": 10, "in_chans": 1}
    assert reference.mismatch(**args, datamodule=FashionMNISTDataModule()) == ""


def test_only_the_main_pair_names_a_reference(tmp_path: Path) -> None:
    assert compose_cfg(QUICK, tmp_path).pair.teacher.reference == "fmnist_resnet14"
    for pair in ("nin_lenet5", "resnet56_resnet20"):
        assert compose_cfg([*QUICK, f"pair={pair}"], tmp_path).pair.teacher.get("reference") is None


@needs_real_data
@pytest.mark.parametrize(("retrain", "source"), [(False, "reference"), (True, "trained")])
def test_default_job_uses_the_reference_teacher_unless_retrain(retrain: bool, source: str, tmp_path: Path) -> None:
    overrides = [*QUICK, "debug=fast_dev_run", "logger=none", f"teacher_training.retrain={str(retrain).lower()}"]
    run(compose_cfg(overrides, tmp_path))
    teacher = json.loads((tmp_path / "summary.json").read_text())["teacher"]
    assert teacher["source"] == source
    if not retrain:
        assert teacher["sha256"] == reference_teacher("fmnist_resnet14").sha256 and teacher["test_acc"] >= 0.93
