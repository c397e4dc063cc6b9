"""Fashion-MNIST from IDX files: tiny files written here, corrupt ones, and the real Debian-packaged dataset."""

from __future__ import annotations

import gzip
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_advkd.data import FashionMNISTDataModule, IDXFormatError, read_idx
from lightning_advkd.data.fashion_mnist import DEBIAN_DIR

from ._writers import write_fashion_mnist, write_idx


def test_batches_shapes_dtypes_labels(fmnist_dir) -> None:
    dm = FashionMNISTDataModule(fmnist_dir, batch_size=16, val_split=20)
    assert (dm.num_classes, dm.in_chans, dm.image_size) == (10, 1, 28)
    assert dm.mean == (0.2860,) and dm.std == (0.3530,)
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (80, 20, 30)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and type(x) is torch.Tensor
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) <= 9


def test_eval_images_are_normalized_pixels(fmnist_dir) -> None:
    raw = read_idx(next(fmnist_dir.glob("t10k-images*")), 2051)
    dm = FashionMNISTDataModule(fmnist_dir)
    dm.setup("test")
    image, label = dm.test_set[5]
    expected = (raw[5].float().unsqueeze(0) / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    assert label == 5  # labels cycle 0..9 in the writer


def test_train_augmentation_crop_and_optional_flip(fmnist_dir) -> None:
    transform = FashionMNISTDataModule(fmnist_dir).train_transform
    assert (transform.padding, transform.hflip) == (2, True)
    assert FashionMNISTDataModule(fmnist_dir, hflip=False).train_transform.hflip is False


def test_uncompressed_and_torchvision_raw_layout(tmp_path) -> None:
    plain = write_fashion_mnist(tmp_path / "plain", 20, 10, gz=False)
    assert not list(plain.glob("*.gz"))
    write_fashion_mnist(tmp_path / "tv" / "FashionMNIST" / "raw", 20, 10)
    for folder in (plain, tmp_path / "tv"):
        dm = FashionMNISTDataModule(folder)
        dm.setup()
        assert len(dm.train_set) == 20 and len(dm.test_set) == 10


def test_same_content_gz_or_not(tmp_path) -> None:
    a = FashionMNISTDataModule(write_fashion_mnist(tmp_path / "a", 20, 10, gz=True))
    b = FashionMNISTDataModule(write_fashion_mnist(tmp_path / "b", 20, 10, gz=False))
    a.setup("fit")
    b.setup("fit")
    assert torch.equal(a._train_base.data, b._train_base.data)
    assert torch.equal(a._train_base.targets, b._train_base.targets)


def test_missing_files_name_the_folder_and_the_debian_package(tmp_path) -> None:
    dm = FashionMNISTDataModule(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "train-images-idx3-ubyte" in message


def test_one_missing_file_is_named(fmnist_dir) -> None:
    (fmnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: t10k-labels-idx1-ubyte\[\.gz\]"):
        FashionMNISTDataModule(fmnist_dir).setup("fit")


def _setup_error(folder: Path) -> str:
    with pytest.raises(IDXFormatError) as info:
        FashionMNISTDataModule(folder).setup()
    return str(info.value)


def test_bad_magic_names_the_file(fmnist_dir) -> None:
    # Labels written where images belong: magic 2049 instead of 2051.
    path = fmnist_dir / "train-images-idx3-ubyte.gz"
    write_idx(fmnist_dir / "train-images-idx3-ubyte", np.zeros(100, np.uint8), 2049)
    message = _setup_error(fmnist_dir)
    assert str(path) in message and "magic number 2049, expected 2051" in message


def test_truncated_data_names_the_file(fmnist_dir) -> None:
    path = fmnist_dir / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:-100]))
    message = _setup_error(fmnist_dir)
    assert str(path) in message and "truncated" in message


def test_truncated_gzip_stream_names_the_file(fmnist_dir) -> None:
    path = fmnist_dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    message = _setup_error(fmnist_dir)
    assert str(path) in message and "gzip" in message


def test_header_only_and_empty_files(fmnist_dir) -> None:
    path = fmnist_dir / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">i", 2051)))
    with pytest.raises(IDXFormatError, match="too short"):
        read_idx(path, 2051)
    path.write_bytes(b"")
    with pytest.raises(IDXFormatError, match="too short"):
        read_idx(path, 2051)


def test_count_mismatch_and_label_range(fmnist_dir) -> None:
    write_idx(fmnist_dir / "train-labels-idx1-ubyte", np.zeros(99, np.uint8), 2049)
    assert "100 images" in _setup_error(fmnist_dir)
    write_idx(fmnist_dir / "train-labels-idx1-ubyte", np.full(100, 10, np.uint8), 2049)
    assert "label 10 out of range" in _setup_error(fmnist_dir)


def test_real_fashion_mnist() -> None:
    if not all(
        (DEBIAN_DIR / f"{p}-{k}-ubyte.gz").is_file() for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
    ):
        pytest.skip(f"Fashion-MNIST not installed in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")
    start = time.perf_counter()
    dm = FashionMNISTDataModule(batch_size=256)  # the default data_dir is the Debian package's folder
    dm.setup()
    assert time.perf_counter() - start < 10  # about 1 s here: parsing must stay a header check plus frombuffer
    train, test = dm._train_base, dm._test_base
    assert train.data.shape == (60000, 1, 28, 28) and train.data.dtype == torch.uint8
    assert test.data.shape == (10000, 1, 28, 28)
    # Fashion-MNIST is balanced: 6,000 train and 1,000 test images per class.
    assert torch.equal(torch.bincount(train.targets, minlength=10), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.targets, minlength=10), torch.full((10,), 1000))
    x, _y = next(iter(dm.test_dataloader()))
    assert x.shape == (256, 1, 28, 28)
    # Normalized with the dataset's own statistics: the test set's mean/std come out near 0/1.
    pixels = (test.data.float() / 255 - 0.2860) / 0.3530
    assert abs(pixels.mean().item()) < 0.02 and abs(pixels.std().item() - 1) < 0.02


def test_real_fashion_mnist_uncompressed_copy(tmp_path) -> None:
    """The uncompressed IDX files give the same tensors as the gz ones (checked on the real test split)."""
    source = DEBIAN_DIR / "t10k-images-idx3-ubyte.gz"
    if not source.is_file():
        pytest.skip(f"Fashion-MNIST not installed in {DEBIAN_DIR}")
    target = tmp_path / "t10k-images-idx3-ubyte"
    with gzip.open(source) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert torch.equal(read_idx(source, 2051), read_idx(target, 2051))
