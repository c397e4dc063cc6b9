"""ImageNet-style folders: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, and the layouts that must be refused."""

from __future__ import annotations

import shutil

import pytest
import torch
from torchvision.transforms import v2

from lightning_advkd.data import ImageNetDataModule

from ._writers import write_image


def test_batches_labels_and_sizes(imagenet_dir) -> None:
    dm = ImageNetDataModule(imagenet_dir, num_classes=3, image_size=32, batch_size=4)
    assert (dm.num_classes, dm.in_chans, dm.image_size, dm.resize_size) == (3, 3, 32, 37)
    dm.setup()
    assert len(dm.train_set) == 12 and len(dm.test_set) == 6
    assert dm.val_set is dm.test_set  # val_split=0: the labelled val folder validates
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) <= 2
    assert dm._test_base.class_to_idx == dm._train_base.class_to_idx


def test_default_transforms_are_the_standard_ones(imagenet_dir) -> None:
    dm = ImageNetDataModule(imagenet_dir, num_classes=3)
    train = dm.train_transform.transforms
    assert isinstance(train[0], v2.RandomResizedCrop) and tuple(train[0].size) == (224, 224)
    assert isinstance(train[1], v2.RandomHorizontalFlip)
    resize, crop = dm.eval_transform.transforms[:2]
    assert list(resize.size) == [256] and tuple(crop.size) == (224, 224)
    assert dm.mean == (0.485, 0.456, 0.406) and dm.std == (0.229, 0.224, 0.225)


def test_eval_of_a_grayscale_or_rgba_image_gives_three_channels(imagenet_dir) -> None:
    write_image(imagenet_dir / "val" / "n01440764" / "gray.png", (50, 40), mode="L")
    write_image(imagenet_dir / "val" / "n01443537" / "alpha.png", (50, 40), mode="RGBA")
    dm = ImageNetDataModule(imagenet_dir, num_classes=3, image_size=32)
    dm.setup("test")
    assert all(dm.test_set[i][0].shape == (3, 32, 32) for i in range(len(dm.test_set)))


def test_flat_val_folder_is_refused_with_the_fix(imagenet_dir) -> None:
    val = imagenet_dir / "val"
    for image in list(val.rglob("*.JPEG")):
        image.rename(val / image.name)
    for folder in [p for p in val.iterdir() if p.is_dir()]:
        folder.rmdir()
    with pytest.raises(ValueError, match=r"outside class folders.*valprep"):
        ImageNetDataModule(imagenet_dir, num_classes=3).setup()


def test_missing_split_and_class_mismatch(imagenet_dir) -> None:
    shutil.rmtree(imagenet_dir / "val" / "n01484850")
    with pytest.raises(ValueError, match=r"same class folders.*only in train: \['n01484850'\]"):
        ImageNetDataModule(imagenet_dir, num_classes=3).setup()
    shutil.rmtree(imagenet_dir / "val")
    with pytest.raises(FileNotFoundError, match=r"val does not exist; expected the layout"):
        ImageNetDataModule(imagenet_dir, num_classes=3).prepare_data()


def test_empty_split_and_wrong_num_classes(imagenet_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"found 3 class folders.*num_classes=1000; pass num_classes=3"):
        ImageNetDataModule(imagenet_dir).setup()
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="has no class folders"):
        ImageNetDataModule(tmp_path / "empty").setup()


def test_unreadable_image_is_named_or_skipped(imagenet_dir, caplog) -> None:
    from lightning_advkd.data.imagenet import UnreadableImageError

    broken = imagenet_dir / "train" / "n01443537" / "n01443537_1.JPEG"
    broken.write_bytes(b"not a jpeg")
    dm = ImageNetDataModule(imagenet_dir, num_classes=3, image_size=16, batch_size=12)
    with pytest.raises(UnreadableImageError, match=rf"cannot read image {broken}.*skip_unreadable=True"):
        next(iter(dm.train_dataloader()))
    dm = ImageNetDataModule(imagenet_dir, num_classes=3, image_size=16, batch_size=12, skip_unreadable=True)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (12, 3, 16, 16) and len(y) == 12 and list(dm._train_base.skipped_images) == [str(broken)]
    assert f"Skipped unreadable image {broken}" in caplog.text and "1 skipped so far" in caplog.text


def test_sixteen_bit_grayscale_becomes_gray_rgb_not_white(imagenet_dir) -> None:
    import numpy as np
    from PIL import Image

    from lightning_advkd.data.imagenet import open_image

    path = imagenet_dir / "deep.png"
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(path)  # mid-gray in 16 bits
    assert np.asarray(open_image(path, "RGB")).tolist() == np.full((8, 8, 3), 128).tolist()
