"""Label-free image folders: image-only train batches, labelled or held-out validation."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_advkd.data import UnlabeledImageFolderDataModule
from lightning_advkd.data.imagenet import UnreadableImageError

from ._writers import write_image, write_image_folder


@pytest.fixture
def unlabeled_dir(tmp_path):
    """12 images at various depths, sizes and modes (RGB, grayscale, RGBA; JPEG and PNG), plus non-images."""
    root = tmp_path / "unlabeled"
    for i in range(4):
        write_image(root / f"flat_{i}.jpg", (40 + i, 36), seed=i)
        write_image(root / "a" / f"gray_{i}.png", (28, 30 + i), mode="L", seed=10 + i)
        write_image(root / "a" / "b" / f"rgba_{i}.PNG", (64, 48), mode="RGBA", seed=20 + i)
    (root / "notes.txt").write_text("not an image")
    write_image(root / ".hidden" / "skip.png", (32, 32))
    return root


@pytest.mark.parametrize("in_chans", [1, 3])
def test_train_batches_are_image_tensors_without_labels(unlabeled_dir, in_chans) -> None:
    dm = UnlabeledImageFolderDataModule(unlabeled_dir, image_size=24, in_chans=in_chans, batch_size=5)
    assert dm.num_classes is None and dm.mean == (0.5,) * in_chans
    dm.setup("fit")
    assert len(dm.train_set) == 12
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, torch.Tensor)
    assert batch.shape == (5, in_chans, 24, 24) and batch.dtype == torch.float32
    assert dm.val_dataloader() == []  # neither val_dir nor val_split: no validation


def test_held_out_unlabeled_split(unlabeled_dir) -> None:
    dm = UnlabeledImageFolderDataModule(unlabeled_dir, image_size=16, val_split=4, batch_size=4)
    dm.setup("fit")
    assert len(dm.train_set) == 8 and len(dm.val_set) == 4
    first = next(iter(dm.val_dataloader()))
    assert isinstance(first, torch.Tensor) and first.shape == (4, 3, 16, 16)
    assert torch.equal(first, next(iter(dm.val_dataloader())))  # eval transform: deterministic


def test_labelled_val_dir(unlabeled_dir, tmp_path) -> None:
    val_dir = write_image_folder(tmp_path / "val", ["cat", "dog"], 3, suffix=".png")
    dm = UnlabeledImageFolderDataModule(unlabeled_dir, val_dir=val_dir, image_size=16, in_chans=1, batch_size=6)
    assert dm.num_classes == 2
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (6, 1, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(next(iter(dm.test_dataloader()))[1], y)
    with pytest.raises(ValueError, match="num_classes=5 but val_dir"):
        UnlabeledImageFolderDataModule(unlabeled_dir, val_dir=val_dir, num_classes=5)


def test_val_dir_inside_data_dir_is_left_out_of_training(unlabeled_dir) -> None:
    val_dir = write_image_folder(unlabeled_dir / "val", ["x", "y"], 2, suffix=".png")
    dm = UnlabeledImageFolderDataModule(unlabeled_dir, val_dir=val_dir)
    dm.setup("fit")
    assert len(dm.train_set) == 12 and len(dm.val_set) == 4


def test_bad_arguments_and_missing_folders(unlabeled_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="either val_dir"):
        UnlabeledImageFolderDataModule(unlabeled_dir, val_dir=tmp_path, val_split=2)
    with pytest.raises(ValueError, match="in_chans"):
        UnlabeledImageFolderDataModule(unlabeled_dir, in_chans=2)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        UnlabeledImageFolderDataModule(tmp_path / "missing").setup("fit")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no image files under"):
        UnlabeledImageFolderDataModule(tmp_path / "no_images").setup("fit")
    with pytest.raises(FileNotFoundError, match=r"val_dir .* is not a folder"):
        UnlabeledImageFolderDataModule(unlabeled_dir, val_dir=tmp_path / "nope").setup("fit")


class _TestOnly(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def test_step(self, batch, batch_idx) -> None:
        raise AssertionError("there is no test set: no test step may run")


def test_without_val_dir_testing_is_skipped_and_said(unlabeled_dir, caplog) -> None:
    dm = UnlabeledImageFolderDataModule(unlabeled_dir, image_size=16)
    with caplog.at_level(logging.WARNING):
        assert dm.test_dataloader() == []
    assert "has no test set" in caplog.text and "testing is skipped" in caplog.text and "val_dir=" in caplog.text
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    assert trainer.test(_TestOnly(), datamodule=dm, verbose=False) == []


def test_sixteen_bit_png_is_scaled_not_saturated(tmp_path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    ramp = (np.arange(32 * 32, dtype=np.int64).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(root / "ramp16.png")
    assert Image.open(root / "ramp16.png").mode.startswith("I")  # really a 16-bit file
    dm = UnlabeledImageFolderDataModule(root, image_size=32, in_chans=1)
    dm.setup("fit")
    image = np.asarray(dm._train_base[0])
    expected = np.round(ramp.astype(np.float64) * 255 / 65535)
    assert np.abs(image.astype(np.float64) - expected).max() <= 0.5
    assert (image == 255).mean() < 0.01  # PIL's own convert gives 99.6 % white here


@pytest.fixture
def with_broken_image(unlabeled_dir):
    (unlabeled_dir / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = unlabeled_dir / "flat_0.jpg"
    (unlabeled_dir / "cut.jpg").write_bytes(good.read_bytes()[:200])  # a truncated JPEG
    return unlabeled_dir


def test_unreadable_image_fails_naming_the_file(with_broken_image) -> None:
    dm = UnlabeledImageFolderDataModule(with_broken_image, image_size=16, batch_size=14)
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*(broken\.png|cut\.jpg).*skip_unreadable=True"):
        next(iter(dm.train_dataloader()))


def test_unreadable_images_are_skipped_with_a_warning_and_a_count(with_broken_image, caplog) -> None:
    dm = UnlabeledImageFolderDataModule(with_broken_image, image_size=16, batch_size=14, skip_unreadable=True)
    with caplog.at_level(logging.WARNING):
        batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (14, 3, 16, 16)
    assert sorted(p.rsplit("/", 1)[1] for p in dm._train_base.skipped_images) == ["broken.png", "cut.jpg"]
    assert "Skipped unreadable image" in caplog.text and "2 skipped so far" in caplog.text
