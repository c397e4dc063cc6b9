"""A datamodule for label-free training: a folder of images, any nesting, yields image batches without labels."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from lightning_advkd.data._base import ImageClassificationDataModule, Transform, to_normalized_tensor
from lightning_advkd.data.imagenet import class_folders

_MODES = {1: "L", 3: "RGB"}


def find_images(root: Path, exclude: Path | None = None) -> list[Path]:
    """All image files under ``root`` (recursively, sorted, hidden entries skipped), minus those under ``exclude``."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if not path.name.lower().endswith(IMG_EXTENSIONS):
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        found.append(path)
    return found


class ImageFiles(Dataset):
    """Image files as bare PIL images in ``mode`` ("L" or "RGB"), no labels.

    Args:
        paths: The image files.
        mode: PIL mode every image is converted to.
    """

    def __init__(self, paths: Sequence[Path], mode: str) -> None:
        self.paths = list(paths)
        self.mode = mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as image:
            return image.convert(self.mode)


class UnlabeledImageFolderDataModule(ImageClassificationDataModule):
    """Label-free training images from a flat or nested folder; optional labelled validation.

    Every image file under ``data_dir`` (any depth; class folders, if any, are ignored) is a training sample, and train
    batches are plain image tensors ``(B, in_chans, image_size, image_size)`` with no labels. Validation is either the
    labelled ``ImageFolder`` at ``val_dir`` (batches ``(images, labels)``; also the test set), or, without ``val_dir``,
    a held-out unlabeled ``val_split`` of ``data_dir`` (image batches), or none. Train transform:
    ``Resize(image_size)`` + ``RandomCrop(image_size, padding=image_size // 8)`` + optional horizontal flip; eval:
    ``Resize(image_size)`` + ``CenterCrop(image_size)``.

    Args:
        data_dir: Folder of training images.
        val_dir: Labelled folder ``val_dir/<class>/<image>`` for validation and test; files inside ``data_dir`` that
            lie under it are left out of training.
        image_size: Side of the square images yielded.
        in_chans: 1 (images converted to grayscale) or 3 (RGB).
        num_classes: Classes of ``val_dir``; counted from its folders when ``None``, checked against them otherwise.
        hflip: Include the horizontal flip in the train augmentation.
        mean: Per-channel normalization mean; defaults to 0.5 per channel.
        std: Per-channel normalization std; defaults to 0.5 per channel.
        **kwargs: Loader, split and seeding arguments of :class:`ImageClassificationDataModule`.

    Raises:
        ValueError: On ``in_chans`` other than 1 or 3, a non-positive ``image_size``, both ``val_dir`` and a
            ``val_split``, or a ``num_classes`` that does not match ``val_dir``.
        FileNotFoundError: At ``setup`` when ``data_dir`` holds no image or ``val_dir`` no class folder.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        val_dir: str | Path | None = None,
        image_size: int = 32,
        in_chans: int = 3,
        num_classes: int | None = None,
        hflip: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        if in_chans not in _MODES:
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if val_dir is not None and kwargs.get("val_split", 0):
            raise ValueError("give either val_dir (labelled validation) or val_split (held-out unlabeled), not both")
        self.in_chans = in_chans
        self.image_size = image_size
        super().__init__(
            data_dir,
            mean=mean if mean is not None else (0.5,) * in_chans,
            std=std if std is not None else (0.5,) * in_chans,
            **kwargs,
        )
        self.val_dir = Path(val_dir).expanduser() if val_dir is not None else None
        self.hflip = hflip
        self.num_classes = num_classes
        if self.val_dir is not None and self.val_dir.is_dir():
            self._check_num_classes()

    def _check_num_classes(self) -> None:
        assert self.val_dir is not None
        found = len(class_folders(self.val_dir))
        if found == 0:
            raise FileNotFoundError(f"UnlabeledImageFolderDataModule: val_dir {self.val_dir} has no class folders")
        if self.num_classes is not None and self.num_classes != found:
            raise ValueError(f"num_classes={self.num_classes} but val_dir {self.val_dir} has {found} class folders")
        self.num_classes = found

    def check_files(self) -> None:
        """Check ``data_dir`` (and ``val_dir`` when given) exist.

        Raises:
            FileNotFoundError: Naming the missing folder.
        """
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"UnlabeledImageFolderDataModule: data_dir {self.data_dir} is not a folder")
        if self.val_dir is not None:
            if not self.val_dir.is_dir():
                raise FileNotFoundError(
                    f"UnlabeledImageFolderDataModule: val_dir {self.val_dir} is not a folder; expected "
                    "val_dir/<class>/<image> (or pass val_dir=None)"
                )
            self._check_num_classes()

    def load_train_dataset(self) -> Dataset:
        exclude = self.val_dir.resolve() if self.val_dir is not None else None
        paths = find_images(self.data_dir, exclude)
        if not paths:
            raise FileNotFoundError(
                f"UnlabeledImageFolderDataModule: no image files under {self.data_dir} (extensions: "
                f"{', '.join(IMG_EXTENSIONS)})"
            )
        return ImageFiles(paths, _MODES[self.in_chans])

    def load_test_dataset(self) -> Dataset | None:
        if self.val_dir is None:
            return None
        mode = _MODES[self.in_chans]
        # A partial, not a lambda: the dataset must pickle for spawned workers.
        return ImageFolder(str(self.val_dir), loader=partial(_open, mode=mode))

    def default_train_transform(self) -> Transform:
        flip = [v2.RandomHorizontalFlip()] if self.hflip else []
        return v2.Compose(
            [
                v2.Resize(self.image_size, antialias=True),
                v2.RandomCrop(self.image_size, padding=self.image_size // 8),
                *flip,
                *to_normalized_tensor(self.mean, self.std),
            ]
        )

    def default_eval_transform(self) -> Transform:
        return v2.Compose(
            [
                v2.Resize(self.image_size, antialias=True),
                v2.CenterCrop(self.image_size),
                *to_normalized_tensor(self.mean, self.std),
            ]
        )


def _open(path: str, mode: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert(mode)
