"""Fashion-MNIST datamodule reading the IDX files directly (gzipped or not), no download and no torchvision layout.

The default ``data_dir`` is where Debian's ``dataset-fashion-mnist`` package installs the four files
(``apt-get install dataset-fashion-mnist``). Parsing is a header check plus one ``frombuffer``: the 60,000 train
images load in about a second and stay in memory as a uint8 tensor; transforms run on tensors.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_advkd.data._base import ImageClassificationDataModule, Transform
from lightning_advkd.data.tensor_transforms import TensorImageTransform

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """An IDX file that is truncated, has the wrong magic number or disagrees with its companion file."""


def read_idx(path: str | Path, magic: int) -> torch.Tensor:
    """Read an unsigned-byte IDX file (gzipped or not) into a uint8 tensor shaped by its header.

    Args:
        path: The file; gzip is detected from its first bytes, not its name.
        magic: Expected magic number: 2051 for images (N, rows, cols), 2049 for labels (N,).

    Returns:
        A uint8 tensor of the header's shape, owning its memory.

    Raises:
        IDXFormatError: Naming the file, when it is not gzip-readable, has another magic number, or holds more or
            fewer bytes than its header announces.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise IDXFormatError(f"{path}: corrupt or truncated gzip stream ({err}); replace the file") from err
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: {len(raw)} bytes, too short for an IDX header; the file is truncated")
    (found,) = struct.unpack(">i", raw[:4])
    if found != magic:
        raise IDXFormatError(
            f"{path}: magic number {found}, expected {magic} ({'images' if magic == IDX_IMAGES_MAGIC else 'labels'}); "
            "not an IDX file of this kind, or corrupt"
        )
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise IDXFormatError(
            f"{path}: header announces shape {tuple(shape)} = {count} bytes of data, found {len(raw) - header}; "
            "the file is truncated or corrupt"
        )
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


class IDXImageDataset(Dataset):
    """An images + labels pair of IDX files in memory: ``(uint8 (1, rows, cols) tensor, label)`` samples.

    Args:
        images_path: The ``*-images-idx3-ubyte[.gz]`` file.
        labels_path: The ``*-labels-idx1-ubyte[.gz]`` file.
        num_classes: Labels must lie in ``[0, num_classes)``.

    Raises:
        IDXFormatError: When a file is malformed, the counts differ or a label is out of range.
    """

    def __init__(self, images_path: str | Path, labels_path: str | Path, num_classes: int = 10) -> None:
        self.data = read_idx(images_path, IDX_IMAGES_MAGIC).unsqueeze(1)
        self.targets = read_idx(labels_path, IDX_LABELS_MAGIC).long()
        if len(self.data) != len(self.targets):
            raise IDXFormatError(
                f"{images_path} holds {len(self.data)} images but {labels_path} {len(self.targets)} labels"
            )
        if len(self.targets) and int(self.targets.max()) >= num_classes:
            raise IDXFormatError(f"{labels_path}: label {int(self.targets.max())} out of range [0, {num_classes})")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.data[index], int(self.targets[index])


class FashionMNISTDataModule(ImageClassificationDataModule):
    """Fashion-MNIST (60,000 train / 10,000 test images, 1x28x28, 10 classes) from its four IDX files.

    Looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` with or without ``.gz`` in ``data_dir``, then in
    ``data_dir/FashionMNIST/raw`` (torchvision's layout). Train augmentation: ``RandomCrop(28, padding=2)`` and,
    unless ``hflip=False``, a horizontal flip; normalization with mean 0.2860, std 0.3530.

    Args:
        data_dir: Folder with the IDX files; defaults to the Debian package's ``/usr/share/datasets/fashion-mnist``.
        hflip: Include the horizontal flip in the train augmentation.
        **kwargs: Loader, split and seeding arguments of :class:`ImageClassificationDataModule`.

    Raises:
        FileNotFoundError: At ``prepare_data``/``setup`` when a file is missing, naming the folder and the fix.
        IDXFormatError: At ``setup`` when a file is corrupt or truncated, naming the file.

    Example:
        >>> dm = FashionMNISTDataModule(batch_size=64, val_split=5000)
        >>> dm.num_classes, dm.in_chans, dm.image_size
        (10, 1, 28)
    """

    num_classes = 10
    in_chans = 1
    image_size = 28
    mean = (0.2860,)
    std = (0.3530,)

    def __init__(self, data_dir: str | Path = DEBIAN_DIR, *, hflip: bool = True, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.hflip = hflip

    def _find(self, stem: str) -> Path | None:
        for folder in (self.data_dir, self.data_dir / "FashionMNIST" / "raw"):
            for name in (f"{stem}.gz", stem):
                if (folder / name).is_file():
                    return folder / name
        return None

    def _pair(self, prefix: str) -> tuple[Path, Path]:
        images, labels = self._find(f"{prefix}-images-idx3-ubyte"), self._find(f"{prefix}-labels-idx1-ubyte")
        assert images is not None and labels is not None, "check_files() runs first"
        return images, labels

    def check_files(self) -> None:
        """Check the four IDX files exist.

        Raises:
            FileNotFoundError: Naming the folder, the missing files and where to get them.
        """
        stems = [f"{p}-{k}-ubyte" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
        missing = [f"{s}[.gz]" for s in stems if self._find(s) is None]
        if missing:
            raise FileNotFoundError(
                f"FashionMNISTDataModule: expected the Fashion-MNIST IDX files in {self.data_dir} (missing: "
                f"{', '.join(missing)}). Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; "
                f"they land in {DEBIAN_DIR}), or download them from https://github.com/zalandoresearch/fashion-mnist "
                "and pass data_dir=<that folder>."
            )

    @override
    def load_train_dataset(self) -> Dataset:
        return IDXImageDataset(*self._pair("train"), num_classes=self.num_classes)

    @override
    def load_test_dataset(self) -> Dataset:
        return IDXImageDataset(*self._pair("t10k"), num_classes=self.num_classes)

    @override
    def default_train_transform(self) -> Transform:
        return TensorImageTransform(self.mean, self.std, padding=2, hflip=self.hflip)

    @override
    def default_eval_transform(self) -> Transform:
        return TensorImageTransform(self.mean, self.std)
