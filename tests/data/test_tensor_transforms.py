"""TensorImageTransform against torchvision's per-sample pipeline, and the batched path of TransformedSubset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lightning_advkd.data import TensorImageTransform, TransformedSubset
from lightning_advkd.data._base import to_normalized_tensor
from lightning_advkd.data.tensor_transforms import ViewParams

MEAN, STD = (0.2, 0.4, 0.6), (0.3, 0.2, 0.1)


class InMemoryImages(torch.utils.data.Dataset):
    """Like the package's CIFAR/IDX/SVHN readers: uint8 images in ``data``, labels in ``targets``."""

    def __init__(self, n: int = 40, labels: bool = True) -> None:
        generator = torch.Generator().manual_seed(0)
        self.data = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
        self.targets = torch.arange(n) % 10 if labels else None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index] if self.targets is None else (self.data[index], int(self.targets[index]))


def test_normalization_is_bit_identical_to_torchvision() -> None:
    images = InMemoryImages().data
    reference = v2.Compose(to_normalized_tensor(MEAN, STD))
    expected = torch.stack([reference(image) for image in images])
    assert torch.equal(TensorImageTransform(MEAN, STD)(images), expected)
    assert torch.equal(TensorImageTransform(MEAN, STD)(images[3]), expected[3])


def test_each_image_gets_its_own_crop_and_flip_of_the_zero_padded_image() -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    batch = image.expand(200, -1, -1, -1)
    out = (TensorImageTransform([0.0] * 3, [1.0] * 3, padding=2, hflip=True)(batch) * 255).round()
    padded = F.pad(image, (2, 2, 2, 2)).float()
    candidates = [c for y in range(5) for x in range(5) for c in (padded[:, y : y + 8, x : x + 8],)]
    candidates += [c.flip(-1) for c in candidates]
    matches = [[i for i, c in enumerate(candidates) if torch.equal(sample, c)] for sample in out]
    assert all(m for m in matches), "every output is a crop (maybe flipped) of the padded image"
    assert len({m[0] for m in matches}) > 25, "crops and flips differ between the images of one batch"


def test_reproducible_under_a_seed_and_bad_input_is_named() -> None:
    transform = TensorImageTransform(MEAN, STD, padding=4, hflip=True)
    images = InMemoryImages().data
    torch.manual_seed(3)
    first = transform(images)
    torch.manual_seed(3)
    assert torch.equal(first, transform(images))
    with pytest.raises(TypeError, match="uint8 image tensors"):
        transform(images.float())
    with pytest.raises(ValueError, match="3 channels but mean/std 1"):
        TensorImageTransform([0.5], [0.5])(images)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        TensorImageTransform(MEAN, STD, padding=-1)


@pytest.mark.parametrize("labels", [True, False])
def test_batched_loading_equals_sample_by_sample(labels) -> None:
    dataset = InMemoryImages(labels=labels)
    subset = TransformedSubset(dataset, indices=list(range(5, 40)), transform=TensorImageTransform(MEAN, STD))
    batched = next(iter(DataLoader(subset, batch_size=16)))
    one_by_one = torch.utils.data.default_collate([subset[i] for i in range(16)])
    if labels:
        torch.testing.assert_close(batched[0], one_by_one[0])
        assert torch.equal(batched[1], one_by_one[1]) and batched[1].dtype == torch.int64
    else:
        torch.testing.assert_close(batched, one_by_one)


def test_per_sample_transforms_and_other_datasets_keep_the_per_sample_path() -> None:
    dataset = InMemoryImages()
    reference = v2.Compose(to_normalized_tensor(MEAN, STD))  # no accepts_batches: sample by sample
    subset = TransformedSubset(dataset, transform=reference)
    torch.testing.assert_close(subset.__getitems__([1, 2])[1][0], reference(dataset.data[2]))
    concat = torch.utils.data.ConcatDataset([dataset, dataset])  # no `data` tensor: sample by sample
    subset = TransformedSubset(concat, transform=TensorImageTransform(MEAN, STD))
    (first, first_label), (second, second_label) = subset.__getitems__([0, 45])
    assert torch.equal(first, subset[0][0]) and torch.equal(second, subset[45][0])
    assert (first_label, second_label) == (0, 5)


def test_global_rng_path_is_unchanged_by_the_view_refactoring() -> None:
    # The draws of the original implementation, in its order: crop offsets (top, then left), then flip flags.
    images = InMemoryImages().data
    torch.manual_seed(11)
    out = TensorImageTransform(MEAN, STD, padding=4, hflip=True)(images)
    torch.manual_seed(11)
    top, left = torch.randint(0, 9, (40,)), torch.randint(0, 9, (40,))
    flip = torch.rand(40) < 0.5
    padded = F.pad(images, (4, 4, 4, 4))
    expected = torch.stack([padded[i, :, t : t + 8, s : s + 8] for i, (t, s) in enumerate(zip(top, left, strict=True))])
    expected = torch.where(flip[:, None, None, None], expected.flip(-1), expected)
    assert torch.equal(out, TensorImageTransform(MEAN, STD)(expected))


def test_a_view_depends_only_on_seed_view_and_index() -> None:
    transform = TensorImageTransform(MEAN, STD, padding=4, hflip=True)
    images = InMemoryImages().data
    indices = torch.arange(40)
    params = transform.view_params(indices, view=2, seed=7)
    batch = transform.apply(images, params)
    torch.manual_seed(0)
    for i in (0, 17, 39):  # alone, in another order, whatever the global RNG: the same image
        alone = transform.apply(images[i], transform.view_params([i], view=2, seed=7))
        assert torch.equal(alone, batch[i])
    reversed_order = transform.apply(images.flip(0), transform.view_params(indices.flip(0), view=2, seed=7))
    assert torch.equal(reversed_order.flip(0), batch)
    state = torch.get_rng_state()
    transform.view_params(indices, view=3, seed=7)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is neither read nor moved
    for other in (transform.view_params(indices, view=3, seed=7), transform.view_params(indices, view=2, seed=8)):
        assert not torch.equal(transform.apply(images, other), batch)


def test_view_params_are_spread_over_every_crop_and_flip() -> None:
    transform = TensorImageTransform(MEAN, STD, padding=2, hflip=True)
    for view, seed in ((0, 0), (1, 0), (0, 1)):
        params = transform.view_params(torch.arange(20000), view=view, seed=seed)
        joint = torch.bincount(params.top * 10 + params.left * 2 + params.flip.long(), minlength=50)
        assert len(joint) == 50 and joint.min() > 320 and joint.max() < 480  # 400 expected for each crop and flip
    plain = TensorImageTransform(MEAN, STD).view_params(torch.arange(10), view=0, seed=0)
    assert not plain.top.any() and not plain.left.any() and not plain.flip.any()


def test_apply_matches_an_explicit_crop_and_flip_and_checks_its_params() -> None:
    transform = TensorImageTransform([0.0] * 3, [1.0] * 3, padding=2, hflip=True)
    images = InMemoryImages(n=6).data
    params = ViewParams(
        torch.tensor([0, 4, 2, 1, 3, 0]), torch.tensor([4, 0, 2, 3, 1, 0]), torch.tensor([1, 0, 1, 0, 1, 0]).bool()
    )
    out = (transform.apply(images, params) * 255).round().to(torch.uint8)
    padded = F.pad(images, (2, 2, 2, 2))
    for i in range(6):
        expected = padded[i, :, params.top[i] : params.top[i] + 8, params.left[i] : params.left[i] + 8]
        assert torch.equal(out[i], expected.flip(-1) if params.flip[i] else expected)
    with pytest.raises(ValueError, match="crop offsets top must lie in"):
        transform.apply(images, ViewParams(params.top + 1, params.left, params.flip))
    with pytest.raises(ValueError, match="one per image"):
        transform.apply(images[:3], params)
    assert "padding=2" in transform.recipe and transform.recipe != TensorImageTransform(MEAN, STD, padding=2).recipe
