"""Writers of small datasets in the real on-disk formats (CIFAR pickles, SVHN .mat, IDX, image folders)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray, magic: int, *, gz: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file with ``magic`` (2051 images, 2049 labels), gzipped when ``gz``."""
    payload = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_fashion_mnist(folder: Path, n_train: int, n_test: int, *, gz: bool = True, seed: int = 0) -> Path:
    """The four Fashion-MNIST IDX files with random 28x28 images and labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, 2051, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, 2049, gz=gz)
    return folder


class _Py2Str(bytes):
    """A Python 2 ``str``: pickled with the (SHORT_)BINSTRING opcode, as in the official CIFAR files."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: _Py2Str) -> None:
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[_Py2Str] = save_py2_str


def _py2(obj):
    if isinstance(obj, str):
        return _Py2Str(obj.encode("latin1"))
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    return obj


def dump_py2_pickle(path: Path, obj: dict) -> None:
    """Pickle ``obj`` the way the CIFAR release did (Python 2, protocol 2, str keys).

    Its ``str`` keys and values load as ``str`` with ``encoding="latin1"`` (torchvision) and as ``bytes`` with
    ``encoding="bytes"`` (the dataset page's snippet, giving ``b"data"``), exactly like the official files.
    """
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(_py2(obj))


def _cifar_batch(rng: np.random.Generator, n: int, num_classes: int, label_key: str) -> dict:
    # The official batches' structure: uint8 rows of 3072 (R, G, B planes, each row-major), labels as a list.
    return {
        "batch_label": "fake batch",
        label_key: [int(v) for v in np.arange(n) % num_classes],
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def write_cifar10(root: Path, per_batch: int = 8, n_test: int = 10, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with five data batches, a test batch and ``batches.meta``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        dump_py2_pickle(folder / f"data_batch_{i}", _cifar_batch(rng, per_batch, 10, "labels"))
    dump_py2_pickle(folder / "test_batch", _cifar_batch(rng, n_test, 10, "labels"))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump_py2_pickle(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072})
    return root


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """``root/cifar-100-python`` with ``train``, ``test`` (fine and coarse labels) and ``meta``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = _cifar_batch(rng, n, 100, "fine_labels")
        batch["coarse_labels"] = [v // 5 for v in batch["fine_labels"]]
        dump_py2_pickle(folder / name, batch)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    dump_py2_pickle(folder / "meta", meta)
    return root


def write_svhn(folder: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """``<split>_32x32.mat`` files: ``X`` uint8 (32, 32, 3, N), ``y`` (N, 1) in 1..10 (10 = digit 0)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return folder


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Path:
    """A random image of ``size`` (width, height) in ``mode``, format from the suffix."""
    rng = np.random.default_rng(seed)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    array = rng.integers(0, 256, size=(size[1], size[0], *channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path)
    return path


def write_image_folder(root: Path, classes: list[str], per_class: int, suffix: str = ".JPEG", seed: int = 0) -> Path:
    """``root/<class>/<i><suffix>`` images of varied sizes."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{name}_{i}{suffix}", (40 + 3 * i, 30 + 2 * c), seed=seed + 100 * c + i)
    return root
