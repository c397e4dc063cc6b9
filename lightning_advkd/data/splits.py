"""Train/validation splits of one loaded dataset: seeded index splits and transformed subsets."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

log = logging.getLogger(__name__)
Transform = Callable[[Any], Any]


class TransformedSubset(Dataset):
    """A view of ``dataset`` restricted to ``indices``, with ``transform`` applied to the image of each sample.

    The underlying dataset returns untransformed samples, either ``(image, label)`` tuples or bare images (unlabeled
    data); the transform only touches the image. One loaded dataset can so back both the augmented train subset and
    the validation subset that uses the deterministic eval transform.

    Args:
        dataset: Map-style dataset of untransformed samples.
        indices: Indices into ``dataset``; ``None`` means all of it.
        transform: Applied to the image; ``None`` returns the sample unchanged.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None = None, transform: Transform | None = None):
        self.dataset = dataset
        self.indices = list(indices) if indices is not None else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        sample = self.dataset[self.indices[index] if self.indices is not None else index]
        if self.transform is None:
            return sample
        if isinstance(sample, tuple):
            image, *rest = sample
            return (self.transform(image), *rest)
        return self.transform(sample)

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """A batch of samples for the DataLoader; one vectorized transform call when the data allows it.

        That is when the transform accepts batches (``accepts_batches``, e.g. :class:`TensorImageTransform`) and the
        dataset keeps its images in a ``data`` tensor (labels, if any, in ``targets``). Otherwise sample by sample.
        """
        images = getattr(self.dataset, "data", None)
        accepts_batches = getattr(self.transform, "accepts_batches", False)
        if self.transform is None or not (accepts_batches and isinstance(images, torch.Tensor)):
            return [self[i] for i in indices]
        rows = torch.as_tensor([self.indices[i] for i in indices] if self.indices is not None else indices)
        batch = self.transform(images[rows])
        targets = getattr(self.dataset, "targets", None)
        if targets is None:
            return list(batch.unbind(0))
        return [(image, int(label)) for image, label in zip(batch.unbind(0), targets[rows].tolist(), strict=True)]

    def untransformed(self) -> tuple[Tensor, Tensor | None]:
        """Every image of the subset untransformed, stacked, and the labels (``None`` when unlabeled), in order.

        Read straight from the dataset's ``data``/``targets`` tensors when it keeps them (the in-memory small-image
        datasets), otherwise sample by sample; the images must then be tensors of one shape.
        """
        images = getattr(self.dataset, "data", None)
        rows = list(range(len(self.dataset))) if self.indices is None else self.indices  # type: ignore[arg-type]
        if isinstance(images, Tensor):
            targets = getattr(self.dataset, "targets", None)
            index = torch.as_tensor(rows, dtype=torch.int64)
            labels = torch.as_tensor(targets)[index] if targets is not None else None
            return images[index], labels
        samples = [self.dataset[i] for i in rows]
        if samples and isinstance(samples[0], tuple):
            return torch.stack([s[0] for s in samples]), torch.as_tensor([int(s[1]) for s in samples])
        return torch.stack(samples), None


def check_val_split(val_split: int | float) -> None:
    """Reject a ``val_split`` that is neither a count >= 0 nor a fraction in [0, 1).

    Raises:
        ValueError: With the accepted forms.
    """
    if isinstance(val_split, bool) or not isinstance(val_split, numbers.Real):
        raise ValueError(f"val_split must be an int count or a float fraction, got {val_split!r}")
    if isinstance(val_split, numbers.Integral):
        if val_split < 0:
            raise ValueError(f"val_split as a count must be >= 0, got {val_split}")
    elif not 0.0 <= float(val_split) < 1.0:
        raise ValueError(f"val_split as a fraction must be in [0, 1), got {val_split}; pass an int for a count")


def split_size(val_split: int | float, n: int) -> int:
    """Number of validation samples that ``val_split`` carves out of ``n`` training samples.

    Args:
        val_split: An int count, or a float fraction of ``n`` (rounded to the nearest int).
        n: Size of the full training set.

    Returns:
        The validation size, in [0, n).

    Raises:
        ValueError: When the split would leave no training sample.
    """
    check_val_split(val_split)
    n_val = int(val_split) if isinstance(val_split, numbers.Integral) else round(float(val_split) * n)
    if n_val >= n:
        raise ValueError(f"val_split={val_split!r} leaves no training sample out of {n}; use a smaller split")
    return n_val


def seeded_split(n: int, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (train, val) index lists with a ``torch.Generator`` seeded from ``seed``.

    The split depends only on ``(n, n_val, seed)``: never on the global RNG, so ``seed_everything`` with another seed
    or another number of workers does not move samples between train and val. Both lists are sorted.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])
