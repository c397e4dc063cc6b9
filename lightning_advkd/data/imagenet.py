"""ImageNet (ILSVRC-2012) datamodule over the standard folder layout ``{train,val}/<wnid>/*.JPEG``.

Also the image-file reading every image-folder datamodule shares: :func:`open_image` (16-bit images scaled to 8 bits,
unreadable files named) and :class:`ImageFolderDataset` (``ImageFolder`` that can skip unreadable files).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2
from typing_extensions import override

from lightning_advkd.data._base import ImageClassificationDataModule, Transform, to_normalized_tensor

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# PIL's modes for 16-bit grayscale (PNG, TIFF); "I" is 32-bit integer, which older Pillow gives 16-bit PNGs.
_WIDE_INTEGER_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# What decoding a damaged or non-image file raises in PIL (UnidentifiedImageError and truncation are OSErrors).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class UnreadableImageError(OSError):
    """An image file that cannot be decoded; the message names it and the ``skip_unreadable`` option."""


def open_image(path: str | Path, mode: str) -> Image.Image:
    """Decode an image file into PIL ``mode`` (``"L"`` or ``"RGB"``), scaling 16-bit images to 8 bits.

    PIL's own ``convert`` clips 16-bit values to 255, so a 16-bit PNG would come out white; here 0..65535 maps to
    0..255 (rounded), like an 8-bit export of the same image.

    Raises:
        UnreadableImageError: When the file cannot be decoded (truncated, not an image, unsupported); names the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _WIDE_INTEGER_MODES:
                image = _sixteen_to_eight_bits(image, path)
            return image.convert(mode)
    except _DECODE_ERRORS as err:
        raise UnreadableImageError(
            f"cannot read image {path} ({type(err).__name__}: {err}): replace or delete the file, or pass "
            "skip_unreadable=True to the datamodule to skip unreadable images with a warning"
        ) from err


def _sixteen_to_eight_bits(image: Image.Image, path: str | Path) -> Image.Image:
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"32-bit integer pixels in [{values.min()}, {values.max()}]; convert {path} to 8 or 16 bits")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def get_skipping_unreadable(dataset: Any, index: int, get: Callable[[int], Any], path_of: Callable[[int], Any]) -> Any:
    """``get(index)``; with ``dataset.skip_unreadable``, an unreadable file is skipped for the next readable sample.

    Each skipped file is logged once per process with the running count, and kept in ``dataset.skipped_images``
    (with DataLoader workers, each worker keeps its own). The sample (image and label together) is replaced, so batches
    keep their size.
    """
    n = len(dataset)
    for offset in range(n):
        try:
            return get((index + offset) % n)
        except UnreadableImageError as err:
            if not dataset.skip_unreadable:
                raise
            path = str(path_of((index + offset) % n))
            if path not in dataset.skipped_images:
                dataset.skipped_images[path] = str(err.__cause__ or err)
                log.warning(
                    "Skipped unreadable image %s (%s); %d skipped so far in this process (skip_unreadable=True)",
                    path,
                    dataset.skipped_images[path],
                    len(dataset.skipped_images),
                )
    raise UnreadableImageError(f"none of the {n} images of {type(dataset).__name__} can be read")


class ImageFolderDataset(ImageFolder):
    """``ImageFolder`` decoding with :func:`open_image`, optionally skipping unreadable files.

    Args:
        root: Folder of class folders.
        mode: PIL mode every image is converted to.
        skip_unreadable: Replace an unreadable image by the next readable sample, with a warning naming the file and
            the count so far; otherwise :class:`UnreadableImageError` names it.
    """

    def __init__(self, root: str | Path, mode: str = "RGB", *, skip_unreadable: bool = False) -> None:
        # A partial, not a lambda: the dataset must pickle for spawned workers.
        super().__init__(str(root), loader=partial(open_image, mode=mode))
        self.skip_unreadable = skip_unreadable
        self.skipped_images: dict[str, str] = {}

    def __getitem__(self, index: int) -> Any:
        return get_skipping_unreadable(self, index, super().__getitem__, lambda i: self.samples[i][0])


def class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (the classes, in ``ImageFolder``'s order)."""
    return sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def loose_images(root: Path) -> list[str]:
    """Names of the image files lying directly in ``root`` rather than in a class folder."""
    return sorted(e.name for e in root.iterdir() if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))


class ImageNetDataModule(ImageClassificationDataModule):
    """ImageNet from ``data_dir/train/<wnid>/*.JPEG`` and ``data_dir/val/<wnid>/*.JPEG`` via ``ImageFolder``.

    ``val`` must be sorted into the same class folders as ``train`` (the official validation tarball is flat: sort it
    with the ground-truth file first, e.g. the widely used ``valprep.sh``). The labelled ``val`` folder is the test set;
    with ``val_split=0`` it also serves as validation (see :class:`ImageClassificationDataModule`). Train
    augmentation: ``RandomResizedCrop(image_size)`` + horizontal flip; eval: ``Resize(image_size / 0.875)`` (256 for
    224) + ``CenterCrop(image_size)``. Images are decoded by PIL in the workers: use ``num_workers`` > 0.

    Args:
        data_dir: Folder holding ``train/`` and ``val/``.
        num_classes: Class folders expected in ``train/`` (1000 for ILSVRC-2012; set it for subsets).
        image_size: Side of the crops.
        skip_unreadable: Skip an unreadable image file (replaced by the next sample) with a warning naming it and the
            count so far; by default reading it fails with :class:`UnreadableImageError` naming the file.
        **kwargs: Loader, split and seeding arguments of :class:`ImageClassificationDataModule`.

    Raises:
        FileNotFoundError: When ``train/`` or ``val/`` is missing or holds no class folders.
        ValueError: When ``val/`` holds loose images, its class folders differ from ``train/``'s, or the number of
            classes differs from ``num_classes``.
    """

    in_chans = 3
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        data_dir: str | Path = "data/imagenet",
        *,
        num_classes: int = 1000,
        image_size: int = 224,
        skip_unreadable: bool = False,
        **kwargs: Any,
    ) -> None:
        if num_classes < 1 or image_size < 1:
            raise ValueError(f"num_classes and image_size must be >= 1, got {num_classes}, {image_size}")
        super().__init__(data_dir, **kwargs)
        self.num_classes = num_classes
        self.image_size = image_size
        self.resize_size = round(image_size / 0.875)
        self.skip_unreadable = skip_unreadable

    def check_files(self) -> None:
        """Check the ``train/<class>/`` and ``val/<class>/`` layout before ``ImageFolder`` scans it.

        Raises:
            FileNotFoundError: When a split folder is missing or has no class folders.
            ValueError: When ``val/`` is flat or its classes differ from ``train/``'s or from ``num_classes``.
        """
        layout = "data_dir/train/<wnid>/*.JPEG and data_dir/val/<wnid>/*.JPEG"
        classes = {}
        for split in ("train", "val"):
            root = self.data_dir / split
            if not root.is_dir():
                raise FileNotFoundError(
                    f"ImageNetDataModule: {root} does not exist; expected the layout {layout} "
                    f"with data_dir={self.data_dir}"
                )
            classes[split] = class_folders(root)
            loose = loose_images(root)
            if loose:
                hint = " (the official val tarball is flat: sort it into class folders, e.g. with valprep.sh)"
                raise ValueError(
                    f"ImageNetDataModule: {root} holds {len(loose)} images outside class folders, e.g. {loose[0]}; "
                    f"expected {layout}{hint if split == 'val' else ''}"
                )
            if not classes[split]:
                raise FileNotFoundError(f"ImageNetDataModule: {root} has no class folders; expected {layout}")
        if classes["train"] != classes["val"]:
            only_train = sorted(set(classes["train"]) - set(classes["val"]))
            only_val = sorted(set(classes["val"]) - set(classes["train"]))
            raise ValueError(
                "ImageNetDataModule: train/ and val/ must have the same class folders (labels come from their sorted "
                f"names); only in train: {only_train[:5]}{'...' if len(only_train) > 5 else ''}, only in val: "
                f"{only_val[:5]}{'...' if len(only_val) > 5 else ''}"
            )
        if len(classes["train"]) != self.num_classes:
            raise ValueError(
                f"ImageNetDataModule: found {len(classes['train'])} class folders in {self.data_dir / 'train'} but "
                f"num_classes={self.num_classes}; pass num_classes={len(classes['train'])} for a subset"
            )

    @override
    def load_train_dataset(self) -> Dataset:
        return ImageFolderDataset(self.data_dir / "train", "RGB", skip_unreadable=self.skip_unreadable)

    @override
    def load_test_dataset(self) -> Dataset:
        return ImageFolderDataset(self.data_dir / "val", "RGB", skip_unreadable=self.skip_unreadable)

    @override
    def default_train_transform(self) -> Transform:
        return v2.Compose(
            [
                v2.RandomResizedCrop(self.image_size, antialias=True),
                v2.RandomHorizontalFlip(),
                *to_normalized_tensor(self.mean, self.std),
            ]
        )

    @override
    def default_eval_transform(self) -> Transform:
        return v2.Compose(
            [
                v2.Resize(self.resize_size, antialias=True),
                v2.CenterCrop(self.image_size),
                *to_normalized_tensor(self.mean, self.std),
            ]
        )
