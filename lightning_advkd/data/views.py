"""Views as data: reproducible augmented views of a dataset, addressed by ``(view, index)`` items, and their loader."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from lightning_advkd.collate import SampleBatch, TensorSamples, collate_samples
from lightning_advkd.data.splits import TransformedSubset

log = logging.getLogger(__name__)


class ViewSampler(Sampler):
    """Yields ``(view, index)`` pairs: the indices of ``sampler``, all tagged with the view of the current epoch.

    Epoch ``e`` uses view ``e % num_views``: with at least as many views as epochs every epoch sees fresh views; with
    fewer, the views are cycled (epoch ``num_views`` sees view 0 again). ``num_views=None``: view ``e``, never cycled.
    The epoch is set by :meth:`set_epoch`, which Lightning calls on a train loader's sampler before every epoch (a
    resumed run so continues with the right view); without it, each pass over the sampler counts one epoch. Datasets
    read by it (:class:`AugmentedViews`, :class:`~lightning_advkd.AugmentedViewCache`) take ``(view, index)`` items,
    so worker processes need no shared state. Under DDP wrap a ``DistributedSampler`` (``set_epoch`` is forwarded)
    and give the Trainer ``use_distributed_sampler=False``.

    Args:
        sampler: the order of the sample indices, e.g. a ``RandomSampler`` (a plain ``range`` or list works too).
        num_views: the number of views per sample; ``None``: unbounded.

    Example:
        >>> sampler = ViewSampler(range(3), num_views=2)
        >>> [list(sampler) for _ in range(3)]
        [[(0, 0), (0, 1), (0, 2)], [(1, 0), (1, 1), (1, 2)], [(0, 0), (0, 1), (0, 2)]]
    """

    def __init__(self, sampler: Sampler | Iterable[int], num_views: int | None = None) -> None:
        if num_views is not None and num_views < 1:
            raise ValueError(f"num_views must be >= 1 (or None for unbounded views), got {num_views}")
        self.sampler = sampler
        self.num_views = num_views
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the view of ``epoch`` on the next pass (and forward the epoch to the wrapped sampler)."""
        self.epoch = epoch
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)  # type: ignore[union-attr]

    def view_of(self, epoch: int) -> int:
        """The view epoch ``epoch`` reads."""
        return epoch % self.num_views if self.num_views is not None else epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        view = self.view_of(self.epoch)
        self.epoch += 1
        return ((view, int(index)) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class AugmentedViews(Dataset):
    """Views as data: view ``v`` of sample ``i`` is one fixed augmented image, a function of ``(seed, v, i)``.

    Items are ``(view, index)`` pairs (as :class:`ViewSampler` yields them) and samples ``(image, label)`` tuples, or
    bare images when unlabeled. The crop offsets and flips come from ``transform.view_params(indices, view, seed)``
    (:class:`~lightning_advkd.data.TensorImageTransform`), never from the global RNG: the live run that reads these
    views and a run that reads the teacher's outputs cached for them
    (:class:`~lightning_advkd.AugmentedViewCache`) see the same images.

    Args:
        images: uint8 ``(N, C, H, W)`` untransformed images.
        labels: ``(N,)`` labels, or ``None``.
        transform: a transform with ``view_params``, ``apply`` and ``recipe``, e.g. ``TensorImageTransform``.
        num_views: the number of distinct views per sample (views ``0 .. num_views - 1``); ``None``: unbounded.
        seed: the seed of the views.

    Raises:
        TypeError: when ``transform`` cannot draw views or ``images`` are not a uint8 batch tensor.
        ValueError: when the label count differs from the image count or ``num_views < 1``.

    Example:
        >>> from lightning_advkd.data import TensorImageTransform
        >>> views = AugmentedViews(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4),
        ...                        TensorImageTransform([0.5], [0.5], padding=2, hflip=True), num_views=2, seed=0)
        >>> image, label = views[1, 3]  # view 1 of sample 3
        >>> image.shape, label
        (torch.Size([1, 8, 8]), 3)
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None,
        transform: Any,
        *,
        num_views: int | None = None,
        seed: int = 0,
    ) -> None:
        if not all(callable(getattr(transform, name, None)) for name in ("view_params", "apply")):
            raise TypeError(
                f"{type(transform).__name__} cannot draw views (no view_params/apply): use TensorImageTransform, the "
                "in-memory small-image transform (Fashion-MNIST, CIFAR, SVHN)"
            )
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"images must be a uint8 (N, C, H, W) tensor, got {getattr(images, 'dtype', images)!r}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if num_views is not None and num_views < 1:
            raise ValueError(f"num_views must be >= 1 (or None for unbounded views), got {num_views}")
        self.images, self.labels, self.transform = images, labels, transform
        self.num_views, self.seed = num_views, seed
        self._digest: str | None = None

    @classmethod
    def from_subset(cls, subset: TransformedSubset, *, num_views: int | None = None, seed: int = 0) -> AugmentedViews:
        """The views of a datamodule's train subset (its untransformed images through its transform)."""
        images, labels = subset.untransformed()
        return cls(images, labels, subset.transform, num_views=num_views, seed=seed)

    @property
    def recipe(self) -> str:
        """What decides the pixels of a view besides the images: the transform's recipe."""
        return str(getattr(self.transform, "recipe", repr(self.transform)))

    @property
    def digest(self) -> str:
        """SHA-256 of the untransformed images and labels (shape, dtype and bytes), computed once."""
        if self._digest is None:
            digest = hashlib.sha256()
            for tensor in (self.images, self.labels):
                if tensor is not None:
                    tensor = tensor.contiguous()
                    digest.update(f"{tensor.dtype}:{tuple(tensor.shape)}".encode())
                    digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    def __len__(self) -> int:
        return len(self.images)

    def params(self, view: int, indices: Tensor) -> Any:
        """The augmentation parameters of view ``view`` of the samples ``indices``."""
        self._check_view(view)
        return self.transform.view_params(indices, view, self.seed)

    def view_batch(self, view: int, indices: Tensor, params: Any | None = None) -> Tensor:
        """The transformed images of view ``view`` of the samples ``indices`` (with ``params`` when given)."""
        if params is None:
            params = self.params(view, indices)
        return self.transform.apply(self.images[indices], params)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple[int, int]]) -> SampleBatch | TensorSamples:
        """The samples of ``(view, index)`` items, read as one batch per view (see :class:`SampleBatch`)."""
        if self.labels is None:
            return TensorSamples(read_in_order(items, self.view_batch))
        batch = read_in_order(items, self._labelled_batch)
        images, labels = batch["image"], batch["label"]
        return SampleBatch(
            [images, labels], len(items), lambda: list(zip(images.unbind(0), labels.tolist(), strict=True))
        )

    def _labelled_batch(self, view: int, indices: Tensor) -> dict[str, Tensor]:
        assert self.labels is not None
        return {"image": self.view_batch(view, indices), "label": self.labels[indices].to(torch.int64)}

    def _check_view(self, view: int) -> None:
        if view < 0 or (self.num_views is not None and view >= self.num_views):
            raise IndexError(f"view {view} out of range: these views number {self.num_views}")


def read_in_order(items: Sequence[Any], read: Callable[[int, Tensor], Any]) -> Any:
    """``read(view, indices)`` once per view among ``items``, the results in the items' order.

    ``read`` returns a batch (a tensor or a dict of tensors, one row per index); with one view (the usual case: a
    :class:`ViewSampler` gives every item of an epoch the same view) its result is returned as it is.
    """
    groups = group_by_view(items)
    if len(groups) == 1:
        return read(groups[0][0], groups[0][2])
    parts = [read(view, indices) for view, _, indices in groups]
    order = torch.as_tensor([position for _, positions, _ in groups for position in positions], dtype=torch.int64)
    inverse = torch.argsort(order)
    if isinstance(parts[0], dict):
        return {name: torch.cat([part[name] for part in parts])[inverse] for name in parts[0]}
    return torch.cat(parts)[inverse]


def group_by_view(items: Sequence[Any]) -> list[tuple[int, list[int], Tensor]]:
    """Split ``(view, index)`` items into ``(view, positions in items, indices)`` groups, one per view.

    Raises:
        TypeError: on an item that is not a ``(view, index)`` pair, naming the sampler to use.
    """
    pairs = _as_pairs(items)
    views = pairs[:, 0]
    if len(views) and bool((views == views[0]).all()):  # the usual case: one view per batch
        return [(int(views[0]), list(range(len(items))), pairs[:, 1])]
    groups: list[tuple[int, list[int], Tensor]] = []
    for view in dict.fromkeys(views.tolist()):  # the views in order of first appearance
        where = torch.nonzero(views == view).flatten()
        groups.append((int(view), where.tolist(), pairs[where, 1]))
    return groups


def _as_pairs(items: Sequence[Any]) -> Tensor:
    """``(view, index)`` items as an ``(N, 2)`` int64 tensor, or a TypeError naming the sampler to use."""
    bad = next((item for item in items if not (isinstance(item, (tuple, list)) and len(item) == 2)), None)
    if bad is not None:
        raise TypeError(
            f"views are read with (view, index) items, got {bad!r}: load them with a ViewSampler, e.g. "
            "view_loader(dataset, batch_size) or DataLoader(dataset, sampler=ViewSampler(...))"
        )
    return torch.as_tensor(items, dtype=torch.int64).reshape(-1, 2)


def view_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    num_views: int | None = None,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    order: Sampler | None = None,
    **loader_kwargs: Any,
) -> DataLoader:
    """A DataLoader over ``(view, index)`` items: the sample order ``DataLoader(shuffle=shuffle)`` would give.

    Args:
        dataset: :class:`AugmentedViews` or :class:`~lightning_advkd.AugmentedViewCache`.
        batch_size: the batch size.
        num_views: views to cycle through; default: the dataset's ``num_views``.
        shuffle: shuffle the samples every epoch (a ``RandomSampler`` drawing from ``generator``).
        generator: the shuffling generator; it also draws the workers' base seed, as in a plain DataLoader.
        order: the sample order to tag with views, e.g. a :class:`ResumableRandomSampler` (``shuffle`` is then
            ignored); default: a ``RandomSampler`` drawing from ``generator``, or in order.
        **loader_kwargs: other ``DataLoader`` arguments (``num_workers``, ``drop_last``, ...); the default
            ``collate_fn`` is :func:`collate_samples` (``default_collate``'s batches, without splitting and restacking).
    """
    loader_kwargs.setdefault("collate_fn", collate_samples)
    if num_views is None:
        num_views = getattr(dataset, "num_views", None)
    indices = range(len(dataset))  # type: ignore[arg-type]
    if order is None:
        order = RandomSampler(indices, generator=generator) if shuffle else SequentialSampler(indices)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=ViewSampler(order, num_views), generator=generator, **loader_kwargs
    )
