"""Fixtures: small datasets in the real on-disk formats, written into each test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ._writers import write_cifar10, write_cifar100, write_fashion_mnist, write_image_folder, write_svhn


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    """Tiny Fashion-MNIST: 100 train / 30 test images, gzipped IDX."""
    return write_fashion_mnist(tmp_path / "fmnist", 100, 30)


@pytest.fixture
def make_fmnist(tmp_path: Path) -> Callable[..., Path]:
    """Factory of Fashion-MNIST folders: ``make_fmnist(name, n_train, n_test, gz=True)``."""

    def make(name: str, n_train: int = 100, n_test: int = 30, *, gz: bool = True) -> Path:
        return write_fashion_mnist(tmp_path / name, n_train, n_test, gz=gz)

    return make


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path / "cifar")


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    return write_cifar100(tmp_path / "cifar")


@pytest.fixture
def svhn_dir(tmp_path: Path) -> Path:
    return write_svhn(tmp_path / "svhn", {"train": 50, "test": 20, "extra": 30})


@pytest.fixture
def imagenet_dir(tmp_path: Path) -> Path:
    """``train/`` with 3 classes x 4 images and ``val/`` with 3 classes x 2 images (JPEG, varied sizes)."""
    classes = ["n01440764", "n01443537", "n01484850"]
    root = tmp_path / "imagenet"
    write_image_folder(root / "train", classes, 4)
    write_image_folder(root / "val", classes, 2, seed=1000)
    return root
