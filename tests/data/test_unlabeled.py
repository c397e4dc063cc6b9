"""Label-free image folders: image-only train batches, labelled or held-out validation."""

from __future__ import annotations

import pytest
import torch

from lightning_advkd.data import UnlabeledImageFolderDataModule

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
    with pytest.raises(RuntimeError, match="no test set"):
        dm.test_dataloader()


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
