"""Fixtures of the application tests: configs composed as the CLI composes them, tiny datasets in the real formats.

Nothing lands in the repository: run directories, the teacher cache and W&B files go to pytest's temporary folders.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from data._writers import write_cifar10, write_cifar100, write_fashion_mnist, write_image_folder, write_svhn
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from lightning_advkd.train import CONF_DIR

#: The checkout (tests read its files; nothing is written into it).
REPO = Path(__file__).resolve().parents[2]
IMAGENET_CLASSES = ["n01440764", "n01443537", "n01484850"]

#: Small, quick settings every job in these tests uses (tiny batches; 2 timed forward passes for the latency column).
QUICK = [
    "print_config=false",
    "summary.latency_repeats=2",
    "dataset.datamodule.num_workers=0",
    "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every dataset of ``conf/dataset`` in its real on-disk format, tiny, under one ``paths.data_dir``."""
    root = tmp_path_factory.mktemp("datasets")
    write_fashion_mnist(root / "fashion-mnist", 64, 32)
    write_cifar10(root / "cifar")
    write_cifar100(root / "cifar", n_train=64, n_test=32)
    write_svhn(root / "svhn", {"train": 32, "test": 16})
    write_image_folder(root / "imagenet" / "train", IMAGENET_CLASSES, 2)
    write_image_folder(root / "imagenet" / "val", IMAGENET_CLASSES, 1, seed=1000)
    write_image_folder(root / "unlabeled" / "images", ["any"], 6)
    write_image_folder(root / "unlabeled_val", ["a", "b"], 2, seed=2000)
    return root


def dataset_overrides(name: str, data_root: Path) -> list[str]:
    """The overrides that select dataset ``name`` and point it at its tiny files."""
    extra = {
        "fashion_mnist": [f"dataset.datamodule.data_dir={data_root / 'fashion-mnist'}"],
        "imagenet": ["dataset.datamodule.num_classes=3", "dataset.datamodule.image_size=64"],
        "unlabeled_folder": [
            f"dataset.datamodule.data_dir={data_root / 'unlabeled'}",
            f"dataset.datamodule.val_dir={data_root / 'unlabeled_val'}",
        ],
    }
    return [f"dataset={name}", f"paths.data_dir={data_root}", *extra.get(name, [])]


def tiny_overrides(data_root: Path, batch_size: int = 16, dataset: str = "fashion_mnist") -> list[str]:
    """The tiny files of ``dataset`` (selected elsewhere), small batches, a teacher trained for 2 batches."""
    data_dir = [f"dataset.datamodule.data_dir={data_root / 'fashion-mnist'}"] if dataset == "fashion_mnist" else []
    return [
        *QUICK,
        f"paths.data_dir={data_root}",
        *data_dir,
        f"dataset.datamodule.batch_size={batch_size}",
        f"dataset.datamodule.eval_batch_size={batch_size}",
        "teacher_training.trainer.max_epochs=1",
        "++teacher_training.trainer.limit_train_batches=2",
        "trainer.log_every_n_steps=1",
    ]


def compose_cfg(overrides: Sequence[str], output_dir: Path, mode: RunMode = RunMode.RUN) -> DictConfig:
    """Compose ``conf/train.yaml`` like ``advkd-train`` does, with the run directory ``output_dir``.

    Hydra's runtime node is filled in and registered, so ``${hydra:runtime.output_dir}`` resolves as in a real run.
    """
    base = [f"paths.cache_dir={output_dir / 'cache'}", f"hydra.run.dir={output_dir}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*base, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.mode = mode
        if mode == RunMode.MULTIRUN:
            cfg.hydra.sweep.dir = str(output_dir.parent)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path, data_root: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, run="run")``: a composed config on the tiny Fashion-MNIST, run dir under tmp_path."""

    def make(*overrides: str, run: str = "run", cache: Path | None = None) -> DictConfig:
        extra = [f"paths.cache_dir={cache}"] if cache is not None else []
        return compose_cfg([*tiny_overrides(data_root), *overrides, *extra], tmp_path / run)

    return make


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: W&B isolated in tmp_path (disabled unless overridden), quiet, no login."""
    env = dict(os.environ)
    env.update(
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp_path / "wandb"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb"),
        NETRC=str(tmp_path / "no-netrc"),
        HYDRA_FULL_ERROR="1",
        PYTHONWARNINGS="ignore",
    )
    env.pop("WANDB_API_KEY", None)
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], tmp_path: Path, *, env: dict[str, str] | None = None, timeout: int = 600, check: bool = True
) -> subprocess.CompletedProcess:
    """``python -m lightning_advkd.train <args>`` in a subprocess, from tmp_path (nothing lands in the repo)."""
    result = subprocess.run(
        [sys.executable, "-m", "lightning_advkd.train", *args],
        cwd=tmp_path,
        env=env or cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit code {result.returncode}\nSTDOUT:\n{result.stdout[-5000:]}\nSTDERR:\n{result.stderr[-8000:]}"
        )
    return result


def has_module(name: str) -> bool:
    """Whether ``name`` (possibly dotted, e.g. a Hydra plugin) is importable here."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
