"""CIFAR-10/100 from python pickles in the official layout, checked against torchvision's own reader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from lightning_advkd.data import CIFAR10DataModule, CIFAR100DataModule

from ._writers import write_cifar10


def test_cifar10_shapes_counts_labels_classes(cifar10_root) -> None:
    dm = CIFAR10DataModule(cifar10_root, batch_size=8, val_split=10)
    assert (dm.num_classes, dm.in_chans, dm.image_size) == (10, 3, 32)
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 10)
    assert dm._train_base.classes[0] == "airplane" and dm._train_base.classes[9] == "truck"
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < 10


def test_pixels_follow_the_rgb_planes_of_each_row(cifar10_root) -> None:
    """A row is 1024 red, 1024 green, 1024 blue bytes, each plane row-major; eval output is that, normalized."""
    with open(cifar10_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][3]
    dm = CIFAR10DataModule(cifar10_root)
    dm.setup("test")
    image, _ = dm.test_set[3]
    for c, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        expected = (row[c * 1024 + y * 32 + x] / 255 - dm.mean[c]) / dm.std[c]
        assert image[c, y, x].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("module", "tv_class", "writer_fixture"),
    [
        (CIFAR10DataModule, torchvision.datasets.CIFAR10, "cifar10_root"),
        (CIFAR100DataModule, torchvision.datasets.CIFAR100, "cifar100_root"),
    ],
)
def test_same_arrays_as_torchvision(module, tv_class, writer_fixture, request, monkeypatch) -> None:
    """torchvision reads the same files (its MD5 check bypassed) into the same images and labels."""
    root = request.getfixturevalue(writer_fixture)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    dm = module(root)
    dm.setup()
    for train, ours in ((True, dm._train_base), (False, dm._test_base)):
        theirs = tv_class(str(root), train=train, download=False)
        assert torch.equal(ours.data, torch.from_numpy(theirs.data).permute(0, 3, 1, 2))
        assert ours.targets.tolist() == list(theirs.targets)
        assert ours.classes == theirs.classes


def test_cifar100_fine_labels(cifar100_root) -> None:
    dm = CIFAR100DataModule(cifar100_root, batch_size=50)
    assert dm.num_classes == 100 and dm.mean == (0.5071, 0.4867, 0.4408)
    dm.setup()
    assert len(dm.train_set) == 200 and len(dm.test_set) == 100
    assert sorted(set(dm._train_base.targets.tolist())) == list(range(100))
    assert dm._train_base.classes[42] == "fine42"


def test_torchvision_rejects_the_small_files_we_accept(cifar10_root) -> None:
    """Why the pickles are read directly: torchvision's MD5 check refuses anything but the official files."""
    with pytest.raises(RuntimeError, match="corrupted"):
        torchvision.datasets.CIFAR10(str(cifar10_root), train=True, download=False)
    with pytest.raises(RuntimeError, match=r"MD5 mismatch.*verify_integrity=False"):
        CIFAR10DataModule(cifar10_root, verify_integrity=True).prepare_data()
    CIFAR10DataModule(cifar10_root).prepare_data()


def test_data_dir_may_be_the_extracted_folder_itself(cifar10_root) -> None:
    dm = CIFAR10DataModule(cifar10_root / "cifar-10-batches-py")
    dm.setup("fit")
    assert len(dm.train_set) == 40


def test_python3_pickles_with_bytes_keys_are_read_too(tmp_path) -> None:
    """Batches re-packed by Python 3 with bytes keys (b"data", as the dataset page's snippet shows them) load too."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 6), ("test", 4)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    dm = CIFAR100DataModule(tmp_path)  # no meta file: class names fall back to indices
    dm.setup()
    assert len(dm.train_set) == 6 and dm._train_base.classes[:2] == ["0", "1"]


def test_train_augmentation(cifar10_root) -> None:
    transform = CIFAR10DataModule(cifar10_root).train_transform
    assert (transform.padding, transform.hflip) == (4, True)


@pytest.mark.parametrize(
    ("module", "folder"),
    [
        (CIFAR10DataModule, "cifar-10-batches-py"),
        (CIFAR100DataModule, "cifar-100-python"),
    ],
)
def test_missing_files_name_the_folder_and_the_fix(tmp_path, module, folder) -> None:
    with pytest.raises(FileNotFoundError) as info:
        module(tmp_path).setup("fit")
    message = str(info.value)
    assert str(tmp_path / folder) in message
    assert "download=True" in message and "tar xzf" in message


def test_one_missing_batch_is_named(cifar10_root) -> None:
    (cifar10_root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: data_batch_4\)"):
        CIFAR10DataModule(cifar10_root).prepare_data()


def test_malformed_batches_fail_with_the_file_name(cifar10_root) -> None:
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0, 1, 2, 3]}))
    with pytest.raises(ValueError, match=r"data_batch_2.*3072"):
        CIFAR10DataModule(cifar10_root).setup("fit")
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(ValueError, match=r"labels .* \[0, 10\)"):
        CIFAR10DataModule(cifar10_root).setup("fit")
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_2 is not a readable CIFAR python pickle"):
        CIFAR10DataModule(cifar10_root).setup("fit")


class _CreatesFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", [2, 5])
def test_crafted_pickle_runs_no_code_and_names_the_file(cifar10_root, tmp_path, protocol) -> None:
    marker = tmp_path / "code-ran"
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_3"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _CreatesFile(marker)}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(ValueError, match=r"data_batch_3 is not a readable CIFAR python pickle.*refused to load"):
        CIFAR10DataModule(cifar10_root).setup("fit")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_pickles_of_every_protocol_load(cifar10_root, protocol) -> None:
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_3"
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": np.array([4, 5]), b"batch_label": b"x"}, protocol))
    dm = CIFAR10DataModule(cifar10_root)
    dm.setup("fit")
    assert len(dm.train_set) == 34 and torch.equal(dm._train_base.data[16].flatten(), torch.from_numpy(data[0]))


def test_download_goes_through_torchvision_into_data_dir(tmp_path, monkeypatch) -> None:
    """``download=True`` asks torchvision for both splits with ``root=data_dir``; the result is then read as usual."""
    calls = []

    class FakeTorchvisionCIFAR10(torchvision.datasets.CIFAR10):
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            if not (Path(root) / self.base_folder).exists():
                write_cifar10(Path(root))  # what the real download extracts there

    dm = CIFAR10DataModule(tmp_path, download=True)
    monkeypatch.setattr(dm, "_tv_class", FakeTorchvisionCIFAR10)
    dm.prepare_data()
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    dm.setup()
    assert len(dm.train_set) == 40
