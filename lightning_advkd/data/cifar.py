"""CIFAR-10 and CIFAR-100 datamodules over the python-pickle release (``cifar-10-batches-py/``, ``cifar-100-python/``).

The batches are read by :class:`CIFARPickleDataset` with a restricted unpickler (only the dicts, lists, strings and
numpy arrays of the real format: a crafted file runs no code), not by ``torchvision.datasets.CIFAR10/100``:
torchvision refuses any file whose MD5 differs from the official archive's, which rules out subsets, re-packed copies
and the small fake batches the tests write, while the format itself is all the loader needs. The real download works
the same way; pass ``verify_integrity=True`` to check it against the official MD5s (taken from torchvision, about
1 s), and ``download=True`` to let torchvision fetch, verify and extract the archive (needs internet).
"""

from __future__ import annotations

import codecs
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from lightning_advkd.data._base import ImageClassificationDataModule, Transform
from lightning_advkd.data.tensor_transforms import TensorImageTransform

_CIFAR_PIXELS = 3 * 32 * 32

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]

# Everything a CIFAR python batch names when unpickled: numpy arrays (the official files: ndarray + _reconstruct +
# dtype; Python 3 re-packs with protocol 5: _frombuffer), and Python 3 bytes pickled with protocol 2
# (_codecs.encode). Both numpy module spellings, since a pickle names the module of the numpy that wrote it.
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}
for _module in ("numpy.core", "numpy._core"):
    _CIFAR_GLOBALS[(f"{_module}.multiarray", "_reconstruct")] = _np_multiarray._reconstruct
    if hasattr(_np_numeric, "_frombuffer"):
        _CIFAR_GLOBALS[(f"{_module}.numeric", "_frombuffer")] = _np_numeric._frombuffer


class _CIFARUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, str/bytes, numbers and numpy arrays only; any other global is refused, not imported.

    A pickle can name any importable callable and call it (``os.system``...): the files are data, so nothing else
    may run.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a CIFAR batch holds only dicts, lists, strings and numpy arrays "
                "(a crafted pickle can run code, so nothing else is unpickled)"
            ) from None


class CIFARPickleDataset(Dataset):
    """One split of CIFAR-10/100 from its python pickles, held in memory as a uint8 ``(N, 3, 32, 32)`` tensor.

    Samples are ``(image, label)`` with ``image`` the uint8 CHW tensor (no transform: the datamodule applies it).

    Args:
        folder: The extracted ``cifar-10-batches-py`` or ``cifar-100-python`` folder.
        files: Pickle files of the split, e.g. ``["data_batch_1", ...]`` or ``["train"]``.
        label_key: ``"labels"`` (CIFAR-10) or ``"fine_labels"`` (CIFAR-100).
        num_classes: Labels must lie in ``[0, num_classes)``.
        meta_file: File with the class names (``batches.meta`` / ``meta``); optional.
        meta_key: Key of the class names in ``meta_file``.

    Raises:
        FileNotFoundError: When a file of the split is missing.
        ValueError: When a pickle is unreadable or names anything but dicts, lists, strings and numpy arrays (a crafted
            file is refused before any of its code runs), lacks the keys, has rows that are not 3072 bytes, or labels
            out of range; the message names the file.
    """

    def __init__(
        self,
        folder: str | Path,
        files: Sequence[str],
        label_key: str,
        num_classes: int,
        meta_file: str | None = None,
        meta_key: str = "label_names",
    ) -> None:
        self.folder = Path(folder)
        images, labels = [], []
        for name in files:
            batch = _load_pickle(self.folder / name)
            data, targets = _batch_arrays(batch, self.folder / name, label_key)
            images.append(data)
            labels.append(targets)
        data = np.concatenate(images)
        targets = np.concatenate(labels)
        if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
            raise ValueError(
                f"labels in {self.folder} must lie in [0, {num_classes}), found [{targets.min()}, {targets.max()}]"
            )
        self.data = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
        self.targets = torch.from_numpy(targets.astype(np.int64))
        self.classes: list[str] = [str(i) for i in range(num_classes)]
        if meta_file is not None and (self.folder / meta_file).is_file():
            names = _load_pickle(self.folder / meta_file).get(meta_key)
            if names is not None and len(names) == num_classes:
                self.classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.data[index], int(self.targets[index])


def _load_pickle(path: Path) -> dict[str, Any]:
    # The official batches are Python 2 pickles; latin1 is how torchvision reads them. Keys come back as str from
    # those and as bytes from pickles written by Python 3 with bytes keys: normalize to str.
    with open(path, "rb") as f:
        try:
            obj = _CIFARUnpickler(f, encoding="latin1").load()
        except Exception as err:
            raise ValueError(
                f"{path} is not a readable CIFAR python pickle ({type(err).__name__}: {err}); re-extract the official "
                "archive there, or pass download=True"
            ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path} should hold a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(batch: dict[str, Any], path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{path} should have keys 'data' and {label_key!r}, found {sorted(batch)}")
    data = np.asarray(batch["data"])
    targets = np.asarray(batch[label_key]).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise ValueError(f"{path}: 'data' should be uint8 rows of {_CIFAR_PIXELS} bytes, got {data.dtype} {data.shape}")
    if len(data) != len(targets):
        raise ValueError(f"{path}: {len(data)} images but {len(targets)} labels")
    return data, targets


class _CIFARDataModule(ImageClassificationDataModule):
    """Shared CIFAR logic; see :class:`CIFAR10DataModule`."""

    in_chans = 3
    image_size = 32
    _tv_class: type[datasets.CIFAR10] = datasets.CIFAR10
    _label_key = "labels"

    def __init__(
        self,
        data_dir: str | Path = "data",
        *,
        download: bool = False,
        verify_integrity: bool = False,
        hflip: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.download = download
        self.verify_integrity = verify_integrity
        self.hflip = hflip

    @property
    def folder(self) -> Path:
        """The extracted archive folder: ``data_dir/<base_folder>``, or ``data_dir`` itself if it is that folder."""
        base = self._tv_class.base_folder
        if self.data_dir.name == base or (not (self.data_dir / base).is_dir() and self._has_split_files(self.data_dir)):
            return self.data_dir
        return self.data_dir / base

    def _has_split_files(self, folder: Path) -> bool:
        return all((folder / name).is_file() for name, _ in self._tv_class.train_list)

    def _all_files(self) -> list[tuple[str, str]]:
        meta = self._tv_class.meta
        return [*self._tv_class.train_list, *self._tv_class.test_list, (meta["filename"], meta["md5"])]

    def prepare_data(self) -> None:
        """Download with torchvision when ``download=True`` (rank 0 only), then check the files."""
        if self.download:
            for train in (True, False):
                self._tv_class(str(self.folder.parent), train=train, download=True)
        self.check_files()

    def check_files(self) -> None:
        """Check the pickles exist (and match the official MD5s when ``verify_integrity=True``).

        Raises:
            FileNotFoundError: Naming the folder expected and the two ways to fill it.
            RuntimeError: When ``verify_integrity=True`` and a file's MD5 differs from the official one.
        """
        data_files = [*self._tv_class.train_list, *self._tv_class.test_list]
        missing = [name for name, _ in data_files if not (self.folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{type(self).__name__}: expected the extracted python-version archive in {self.folder} "
                f"(missing: {', '.join(missing)}). Pass download=True (needs internet) to fetch it, or extract "
                f"{self._tv_class.filename} there yourself "
                f"(`tar xzf {self._tv_class.filename} -C {self.folder.parent}`)."
            )
        if self.verify_integrity:
            bad = [
                name
                for name, md5 in self._all_files()
                if (self.folder / name).is_file() and not check_integrity(str(self.folder / name), md5)
            ]
            if bad:
                raise RuntimeError(
                    f"{type(self).__name__}: {', '.join(bad)} in {self.folder} differ from the official archive "
                    "(MD5 mismatch): re-extract it, or pass verify_integrity=False to use these files as they are."
                )

    def load_train_dataset(self) -> Dataset:
        return self._load([name for name, _ in self._tv_class.train_list])

    def load_test_dataset(self) -> Dataset:
        return self._load([name for name, _ in self._tv_class.test_list])

    def _load(self, files: list[str]) -> CIFARPickleDataset:
        meta = self._tv_class.meta
        return CIFARPickleDataset(self.folder, files, self._label_key, self.num_classes, meta["filename"], meta["key"])  # type: ignore[arg-type]

    def default_train_transform(self) -> Transform:
        return TensorImageTransform(self.mean, self.std, padding=4, hflip=self.hflip)

    def default_eval_transform(self) -> Transform:
        return TensorImageTransform(self.mean, self.std)


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (50,000 train / 10,000 test images, 3x32x32, 10 classes) from the python-pickle release.

    Expects ``data_dir/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (``data_dir`` may also be the
    ``cifar-10-batches-py`` folder itself). Train augmentation: ``RandomCrop(32, padding=4)`` + horizontal flip, then
    normalization with the CIFAR-10 statistics. See the module docstring for why the pickles are read directly.

    Args:
        data_dir: Folder containing ``cifar-10-batches-py``.
        download: Fetch and extract the archive with torchvision in ``prepare_data`` (needs internet).
        verify_integrity: Check each file's MD5 against the official archive before loading.
        hflip: Include the horizontal flip in the train augmentation.
        **kwargs: Loader, split and seeding arguments of :class:`ImageClassificationDataModule`.

    Raises:
        FileNotFoundError: At ``prepare_data``/``setup`` when the files are missing, naming the folder and the fix.

    Example:
        >>> dm = CIFAR10DataModule("data", batch_size=64, val_split=5000)  # no file is read before setup
        >>> dm.num_classes, dm.in_chans, dm.image_size
        (10, 3, 32)
    """

    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    _tv_class = datasets.CIFAR10
    _label_key = "labels"


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (50,000 train / 10,000 test images, 3x32x32, 100 fine classes) from the python-pickle release.

    Expects ``data_dir/cifar-100-python/{train,test,meta}``. Same augmentation as :class:`CIFAR10DataModule`, with the
    CIFAR-100 statistics used by the distillation benchmarks (CRD, RepDistiller). Labels are the fine labels.

    Args:
        data_dir: Folder containing ``cifar-100-python``.
        download: Fetch and extract the archive with torchvision in ``prepare_data`` (needs internet).
        verify_integrity: Check each file's MD5 against the official archive before loading.
        hflip: Include the horizontal flip in the train augmentation.
        **kwargs: Loader, split and seeding arguments of :class:`ImageClassificationDataModule`.

    Raises:
        FileNotFoundError: At ``prepare_data``/``setup`` when the files are missing, naming the folder and the fix.
    """

    num_classes = 100
    mean = (0.5071, 0.4867, 0.4408)
    std = (0.2675, 0.2565, 0.2761)
    _tv_class = datasets.CIFAR100
    _label_key = "fine_labels"
