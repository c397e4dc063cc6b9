"""SVHN from the cropped-digits .mat files, checked against torchvision's own reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision

from lightning_advkd.data import SVHNDataModule, SVHNMatDataset

from ._writers import write_svhn


def test_shapes_counts_and_label_10_is_0(svhn_dir) -> None:
    dm = SVHNDataModule(svhn_dir, batch_size=10, val_split=0.2)
    assert (dm.num_classes, dm.in_chans, dm.image_size) == (10, 3, 32)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 20)
    # The writer's labels cycle 1..10; 10 (the digit 0) must come out as 0, the others unchanged.
    assert dm._train_base.targets[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) <= 9


def test_pixels_are_x_transposed_to_chw(svhn_dir) -> None:
    x = scipy.io.loadmat(svhn_dir / "test_32x32.mat")["X"]
    dm = SVHNDataModule(svhn_dir)
    dm.setup("test")
    image, _ = dm.test_set[7]
    for c, row, col in [(0, 0, 0), (1, 3, 9), (2, 31, 30)]:
        expected = (x[row, col, c, 7] / 255 - dm.mean[c]) / dm.std[c]
        assert image[c, row, col].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("split", ["train", "test", "extra"])
def test_same_arrays_as_torchvision(svhn_dir, split, monkeypatch) -> None:
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    theirs = torchvision.datasets.SVHN(str(svhn_dir), split=split)
    ours = SVHNMatDataset(svhn_dir / f"{split}_32x32.mat")
    assert torch.equal(ours.data, torch.from_numpy(theirs.data))
    assert ours.targets.tolist() == theirs.labels.tolist()


def test_use_extra_appends_the_extra_split(svhn_dir) -> None:
    dm = SVHNDataModule(svhn_dir, use_extra=True, val_split=10)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 80


def test_augmentation_crops_but_never_flips(svhn_dir) -> None:
    transform = SVHNDataModule(svhn_dir).train_transform
    assert (transform.padding, transform.hflip) == (4, False)


def test_missing_files_name_the_folder_and_the_fix(tmp_path, svhn_dir) -> None:
    with pytest.raises(FileNotFoundError) as info:
        SVHNDataModule(tmp_path / "empty").prepare_data()
    message = str(info.value)
    assert str(tmp_path / "empty") in message and "download=True" in message
    assert "train_32x32.mat" in message and "extra_32x32.mat" not in message
    (svhn_dir / "extra_32x32.mat").unlink()
    SVHNDataModule(svhn_dir).prepare_data()  # extra is only needed with use_extra
    with pytest.raises(FileNotFoundError, match=r"missing: extra_32x32\.mat"):
        SVHNDataModule(svhn_dir, use_extra=True).prepare_data()


def test_integrity_check_and_malformed_files(svhn_dir) -> None:
    with pytest.raises(RuntimeError, match=r"MD5 mismatch.*verify_integrity=False"):
        SVHNDataModule(svhn_dir, verify_integrity=True).prepare_data()
    scipy.io.savemat(svhn_dir / "test_32x32.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"test_32x32\.mat.*\(32, 32, 3, N\)"):
        SVHNDataModule(svhn_dir).setup("test")
    (svhn_dir / "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"test_32x32\.mat is not a readable SVHN \.mat file"):
        SVHNDataModule(svhn_dir).setup("test")


def test_download_goes_through_torchvision_into_data_dir(tmp_path, monkeypatch) -> None:
    """``download=True`` asks torchvision for each split with ``root=data_dir``."""
    calls = []

    class FakeSVHN:
        split_list = torchvision.datasets.SVHN.split_list

        def __init__(self, root: str, split: str, download: bool) -> None:
            calls.append((root, split, download))
            write_svhn(Path(root), {split: 10})  # what the real download puts there

    monkeypatch.setattr(torchvision.datasets, "SVHN", FakeSVHN)
    SVHNDataModule(tmp_path / "svhn", download=True, use_extra=True).prepare_data()
    assert calls == [(str(tmp_path / "svhn"), split, True) for split in ("train", "test", "extra")]
