"""SVHN datamodule over the cropped-digits MATLAB files (``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``).

The ``.mat`` files are read by :class:`SVHNMatDataset` (``scipy.io.loadmat``, as torchvision does) rather than by
``torchvision.datasets.SVHN``, which rejects any file whose MD5 differs from the official one (subsets, the tests'
small files). ``verify_integrity=True`` checks the official MD5s; ``download=True`` fetches the files with torchvision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets
from torchvision.datasets.utils import check_integrity
from typing_extensions import override

from lightning_advkd.data._base import ImageClassificationDataModule, Transform
from lightning_advkd.data.tensor_transforms import TensorImageTransform


class SVHNMatDataset(Dataset):
    """One SVHN ``*_32x32.mat`` file in memory: uint8 ``(N, 3, 32, 32)`` images, labels with 10 mapped to 0.

    The file holds ``X`` of shape ``(32, 32, 3, N)`` and ``y`` of shape ``(N, 1)`` with digits 1-9 as themselves
    and the digit 0 as 10; like torchvision, label 10 becomes 0. Samples are ``(uint8 CHW tensor, label)``.

    Args:
        path: The ``.mat`` file.

    Raises:
        ValueError: When the file is not a readable ``.mat`` or ``X``/``y`` have the wrong shape, dtype or values.
    """

    def __init__(self, path: str | Path) -> None:
        import scipy.io  # optional dependency: the `data` extra

        self.path = Path(path)
        try:
            mat = scipy.io.loadmat(str(self.path), variable_names=["X", "y"])
        except Exception as err:
            raise ValueError(f"{self.path} is not a readable SVHN .mat file ({type(err).__name__}: {err})") from err
        if "X" not in mat or "y" not in mat:
            raise ValueError(f"{self.path} should hold variables 'X' and 'y', found {sorted(mat)}")
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
            raise ValueError(f"{self.path}: 'X' should be uint8 of shape (32, 32, 3, N), got {x.dtype} {x.shape}")
        if x.shape[3] != len(y):
            raise ValueError(f"{self.path}: {x.shape[3]} images but {len(y)} labels")
        if y.size and (y.min() < 0 or y.max() > 10):
            raise ValueError(
                f"{self.path}: labels should lie in 1..10 (10 is the digit 0), found [{y.min()}, {y.max()}]"
            )
        self.data = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
        self.targets = torch.from_numpy(np.where(y == 10, 0, y).astype(np.int64))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.data[index], int(self.targets[index])


class SVHNDataModule(ImageClassificationDataModule):
    """SVHN cropped digits (73,257 train [+531,131 extra] / 26,032 test images, 3x32x32, 10 classes).

    Expects ``data_dir/{train_32x32.mat,test_32x32.mat}`` and, with ``use_extra=True``, ``extra_32x32.mat`` (the
    layout torchvision downloads to). Train augmentation: ``RandomCrop(32, padding=4)`` only; flipping digits changes
    their meaning. Label 10 (the digit 0) is mapped to 0.

    Args:
        data_dir: Folder with the ``.mat`` files.
        use_extra: Append the ``extra`` split to the train set (before any ``val_split`` is carved).
        download: Fetch the files with torchvision in ``prepare_data`` (needs internet).
        verify_integrity: Check each file's MD5 against the official one before loading.
        **kwargs: Loader, split and seeding arguments of :class:`ImageClassificationDataModule`.

    Raises:
        FileNotFoundError: At ``prepare_data``/``setup`` when a file is missing, naming the folder and the fix.
    """

    num_classes = 10
    in_chans = 3
    image_size = 32
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)

    def __init__(
        self,
        data_dir: str | Path = "data/svhn",
        *,
        use_extra: bool = False,
        download: bool = False,
        verify_integrity: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.use_extra = use_extra
        self.download = download
        self.verify_integrity = verify_integrity

    @property
    def splits(self) -> list[str]:
        """The torchvision split names this datamodule reads."""
        return ["train", "test", *(["extra"] if self.use_extra else [])]

    def prepare_data(self) -> None:
        """Download with torchvision when ``download=True`` (rank 0 only), then check the files."""
        if self.download:
            for split in self.splits:
                datasets.SVHN(str(self.data_dir), split=split, download=True)
        self.check_files()

    def check_files(self) -> None:
        """Check the ``.mat`` files exist (and match the official MD5s when ``verify_integrity=True``).

        Raises:
            FileNotFoundError: Naming the folder expected and the two ways to fill it.
            RuntimeError: When ``verify_integrity=True`` and a file's MD5 differs from the official one.
        """
        files = {split: datasets.SVHN.split_list[split][1:] for split in self.splits}
        missing = [name for name, _ in files.values() if not (self.data_dir / name).is_file()]
        if missing:
            urls = ", ".join(datasets.SVHN.split_list[s][0] for s in self.splits)
            raise FileNotFoundError(
                f"SVHNDataModule: expected the cropped-digits files in {self.data_dir} "
                f"(missing: {', '.join(missing)}). "
                f"Pass download=True (needs internet) to fetch them, or put the files from {urls} there yourself."
            )
        if self.verify_integrity:
            bad = [name for name, md5 in files.values() if not check_integrity(str(self.data_dir / name), md5)]
            if bad:
                raise RuntimeError(
                    f"SVHNDataModule: {', '.join(bad)} in {self.data_dir} differ from the official files (MD5 "
                    "mismatch): download them again, or pass verify_integrity=False to use them as they are."
                )

    def _file(self, split: str) -> Path:
        return self.data_dir / datasets.SVHN.split_list[split][1]

    @override
    def load_train_dataset(self) -> Dataset:
        train = SVHNMatDataset(self._file("train"))
        return ConcatDataset([train, SVHNMatDataset(self._file("extra"))]) if self.use_extra else train

    @override
    def load_test_dataset(self) -> Dataset:
        return SVHNMatDataset(self._file("test"))

    @override
    def default_train_transform(self) -> Transform:
        return TensorImageTransform(self.mean, self.std, padding=4)

    @override
    def default_eval_transform(self) -> Transform:
        return TensorImageTransform(self.mean, self.std)
