"""ImageNet (ILSVRC-2012) datamodule over the standard folder layout ``{train,val}/<wnid>/*.JPEG``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from lightning_advkd.data._base import ImageClassificationDataModule, Transform, to_normalized_tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        self, data_dir: str | Path = "data/imagenet", *, num_classes: int = 1000, image_size: int = 224, **kwargs: Any
    ) -> None:
        if num_classes < 1 or image_size < 1:
            raise ValueError(f"num_classes and image_size must be >= 1, got {num_classes}, {image_size}")
        super().__init__(data_dir, **kwargs)
        self.num_classes = num_classes
        self.image_size = image_size
        self.resize_size = round(image_size / 0.875)

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

    def load_train_dataset(self) -> Dataset:
        return ImageFolder(str(self.data_dir / "train"))

    def load_test_dataset(self) -> Dataset:
        return ImageFolder(str(self.data_dir / "val"))

    def default_train_transform(self) -> Transform:
        return v2.Compose(
            [
                v2.RandomResizedCrop(self.image_size, antialias=True),
                v2.RandomHorizontalFlip(),
                *to_normalized_tensor(self.mean, self.std),
            ]
        )

    def default_eval_transform(self) -> Transform:
        return v2.Compose(
            [
                v2.Resize(self.resize_size, antialias=True),
                v2.CenterCrop(self.image_size),
                *to_normalized_tensor(self.mean, self.std),
            ]
        )
