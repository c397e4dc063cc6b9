"""A datamodule for label-free training: a folder of images, any nesting, yields image batches without labels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2
from typing_extensions import override

from lightning_advkd.data._base import ImageClassificationDataModule, Transform, to_normalized_tensor
from lightning_advkd.data.imagenet import ImageFolderDataset, class_folders, get_skipping_unreadable, open_image

log = logging.getLogger(__name__)

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
    """Image files as bare PIL images in ``mode`` ("L" or "RGB"), no labels (16-bit images scaled to 8 bits).

    Args:
        paths: The image files.
        mode: PIL mode every image is converted to.
        skip_unreadable: Replace an unreadable image by the next readable one, with a warning naming the file and the
            count so far; otherwise :class:`~lightning_advkd.data.imagenet.UnreadableImageError` names it.
    """

    def __init__(self, paths: Sequence[Path], mode: str, *, skip_unreadable: bool = False) -> None:
        self.paths = list(paths)
        self.mode = mode
        self.skip_unreadable = skip_unreadable
        self.skipped_images: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        return get_skipping_unreadable(
            self, index, lambda i: open_image(self.paths[i], self.mode), self.paths.__getitem__
        )


class UnlabeledImageFolderDataModule(ImageClassificationDataModule):
    """Label-free training images from a flat or nested folder; optional labelled validation.

    Every image file under ``data_dir`` (any depth; class folders, if any, are ignored) is a training sample, and train
    batches are plain image tensors ``(B, in_chans, image_size, image_size)`` with no labels. Validation is either the
    labelled ``ImageFolder`` at ``val_dir`` (batches ``(images, labels)``; also the test set), or, without ``val_dir``,
    a held-out unlabeled ``val_split`` of ``data_dir`` (image batches), or none. Without ``val_dir`` there is no test
    set: ``test_dataloader`` logs that testing is skipped and returns no loader. Train transform:
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
        skip_unreadable: Skip an unreadable image file (replaced by the next sample) with a warning naming it and the
            count so far; by default reading it fails naming the file.
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
        skip_unreadable: bool = False,
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
        self.skip_unreadable = skip_unreadable
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

    @override
    def load_train_dataset(self) -> Dataset:
        exclude = self.val_dir.resolve() if self.val_dir is not None else None
        paths = find_images(self.data_dir, exclude)
        if not paths:
            raise FileNotFoundError(
                f"UnlabeledImageFolderDataModule: no image files under {self.data_dir} (extensions: "
                f"{', '.join(IMG_EXTENSIONS)})"
            )
        return ImageFiles(paths, _MODES[self.in_chans], skip_unreadable=self.skip_unreadable)

    @override
    def load_test_dataset(self) -> Dataset | None:
        if self.val_dir is None:
            return None
        return ImageFolderDataset(self.val_dir, _MODES[self.in_chans], skip_unreadable=self.skip_unreadable)

    @override
    def test_dataloader(self) -> DataLoader | list:
        if self.val_dir is None:
            log.warning(
                "UnlabeledImageFolderDataModule(%s) has no test set (label-free images, no val_dir): testing is "
                "skipped. Pass val_dir=<folder of val_dir/<class>/<image>> to test.",
                self.data_dir,
            )
            return []
        return super().test_dataloader()

    @override
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

    @override
    def default_eval_transform(self) -> Transform:
        return v2.Compose(
            [
                v2.Resize(self.image_size, antialias=True),
                v2.CenterCrop(self.image_size),
                *to_normalized_tensor(self.mean, self.std),
            ]
        )
