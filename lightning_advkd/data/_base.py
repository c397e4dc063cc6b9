"""The shared base of the image-classification LightningDataModules: splits, loaders, seeding, transforms, views."""

from __future__ import annotations

import hashlib
import itertools
import logging
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler
from torchvision.transforms import v2

log = logging.getLogger(__name__)

Transform = Callable[[Any], Any]


def to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[Transform]:
    """The tail every pipeline ends with: image (PIL or uint8 CHW tensor) -> normalized float32 CHW tensor.

    Args:
        mean: Per-channel mean of the [0, 1]-scaled images.
        std: Per-channel standard deviation of the [0, 1]-scaled images.

    Returns:
        A list of v2 transforms, to be appended to the geometric ones.
    """
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
        # Plain tensors out: `tv_tensors.Image` batches would carry their subclass into user code.
        v2.ToPureTensor(),
    ]


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
        if not (getattr(self.transform, "accepts_batches", False) and isinstance(images, torch.Tensor)):
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

    def __getitems__(self, items: list[tuple[int, int]]) -> list[Any]:
        images: list[Tensor | None] = [None] * len(items)
        for view, positions, indices in group_by_view(items):
            for position, image in zip(positions, self.view_batch(view, indices).unbind(0), strict=True):
                images[position] = image
        if self.labels is None:
            return images
        labels = self.labels[torch.as_tensor([index for _, index in items], dtype=torch.int64)].tolist()
        return [(image, int(label)) for image, label in zip(images, labels, strict=True)]

    def _check_view(self, view: int) -> None:
        if view < 0 or (self.num_views is not None and view >= self.num_views):
            raise IndexError(f"view {view} out of range: these views number {self.num_views}")


def group_by_view(items: Sequence[Any]) -> list[tuple[int, list[int], Tensor]]:
    """Split ``(view, index)`` items into ``(view, positions in items, indices)`` groups, one per view.

    Raises:
        TypeError: on an item that is not a ``(view, index)`` pair, naming the sampler to use.
    """
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for position, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(
                f"views are read with (view, index) items, got {item!r}: load them with a ViewSampler, e.g. "
                "view_loader(dataset, batch_size) or DataLoader(dataset, sampler=ViewSampler(...))"
            )
        positions, indices = groups.setdefault(int(item[0]), ([], []))
        positions.append(position)
        indices.append(int(item[1]))
    return [(view, pos, torch.as_tensor(idx, dtype=torch.int64)) for view, (pos, idx) in groups.items()]


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
        **loader_kwargs: other ``DataLoader`` arguments (``num_workers``, ``drop_last``, ...).
    """
    if num_views is None:
        num_views = getattr(dataset, "num_views", None)
    indices = range(len(dataset))  # type: ignore[arg-type]
    if order is None:
        order = RandomSampler(indices, generator=generator) if shuffle else SequentialSampler(indices)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=ViewSampler(order, num_views), generator=generator, **loader_kwargs
    )


class ResumableRandomSampler(RandomSampler):
    """``RandomSampler(data, generator=generator)`` that can start an epoch part way through, for exact resume.

    The order is the one ``DataLoader(shuffle=True, generator=generator)`` gives. Each epoch remembers the generator's
    state its permutation is drawn from (:attr:`order_state`); a sampler built with ``resume_state`` and ``skip`` sets
    the generator to that state when its first epoch starts, draws the same permutation and drops its first ``skip``
    indices, those the interrupted run already trained on. The generator then stands where it stood in the
    uninterrupted run, so later epochs match too.

    Args:
        data_source: The dataset (only its length is used).
        generator: The shuffling generator, shared with the DataLoader.
        resume_state: The :attr:`order_state` of the interrupted epoch, for the first epoch only.
        skip: Indices to drop at the start of the first epoch only.
    """

    def __init__(
        self, data_source: Sized, generator: torch.Generator, *, resume_state: Tensor | None = None, skip: int = 0
    ) -> None:
        super().__init__(data_source, generator=generator)
        self.resume_state = resume_state
        self.skip = skip
        #: The generator's state the current epoch's permutation was drawn from (``None`` before the first epoch).
        self.order_state: Tensor | None = None

    def __iter__(self) -> Iterator[int]:
        return _resumed(self, super().__iter__())


class ResumableDistributedSampler(DistributedSampler):
    """Lightning's ``DistributedSampler`` for a shuffled train loader, able to start an epoch part way through.

    The order is a function of ``(seed, epoch)`` as in ``DistributedSampler``; ``skip`` drops the first indices of this
    rank's share in the first epoch only. ``generator`` (the DataLoader's, which draws the workers' base seed) is
    remembered and restored as in :class:`ResumableRandomSampler`.

    Args:
        dataset: The dataset (only its length is used).
        generator: The DataLoader's generator.
        resume_state: The :attr:`order_state` of the interrupted epoch, for the first epoch only.
        skip: Indices of this rank's share to drop at the start of the first epoch only.
        **kwargs: ``DistributedSampler``'s ``num_replicas``, ``rank``, ``shuffle``, ``seed``, ``drop_last``.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        generator: torch.Generator,
        resume_state: Tensor | None = None,
        skip: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.generator = generator
        self.resume_state = resume_state
        self.skip = skip
        self.order_state: Tensor | None = None

    def __iter__(self) -> Iterator[int]:
        return _resumed(self, super().__iter__())


def _resumed(sampler: ResumableRandomSampler | ResumableDistributedSampler, order: Iterator[int]) -> Iterator[int]:
    # The permutation is drawn at the first next() of `order`, after this: the generator is set before it.
    generator = sampler.generator
    assert generator is not None
    if sampler.resume_state is not None:
        generator.set_state(sampler.resume_state)
        sampler.resume_state = None
    sampler.order_state = generator.get_state()
    skip, sampler.skip = sampler.skip, 0
    return itertools.islice(order, skip, None)


def _distributed(trainer: Any) -> bool:
    return trainer is not None and trainer.world_size > 1


def batches_done_in_epoch(trainer: Any) -> int:
    """Train batches the current epoch of ``trainer.fit`` has finished, 0 at an epoch boundary or outside ``fit``."""
    if trainer is None or trainer.state.fn != TrainerFn.FITTING:
        return 0
    done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    return 0 if done >= trainer.num_training_batches else done


class TrainOrder:
    """The train loader's shuffled order and the position within the epoch, as checkpoint state of a datamodule.

    One generator shuffles every epoch (and draws the DataLoader's worker base seed), so epoch k's order is the same in
    every run with the seed. :meth:`state_dict` records the generator, and, when a checkpoint is written part way
    through an epoch (``ModelCheckpoint(every_n_train_steps=...)``, a SIGTERM), the state the epoch's order was drawn
    from and the samples already trained on; after :meth:`load_state_dict` the next :meth:`sampler` replays that
    epoch's order from where the run stopped, so no sample is seen twice or skipped and the resumed run ends as the
    uninterrupted one (with ``num_workers > 0``, only the resumed epoch's worker seeds differ). Under DDP
    (``trainer.world_size > 1``) the sampler is Lightning's ``DistributedSampler`` (seed of ``seed_everything``),
    made resumable, so Lightning leaves it in place (and ``Trainer(use_distributed_sampler=False)`` has no effect).

    Args:
        seed: Seed of the generator.

    Example:
        >>> order = TrainOrder(seed=0)
        >>> list(order.sampler(range(5)))
        [4, 0, 1, 3, 2]
        >>> order.load_state_dict({"order_generator_state": TrainOrder(seed=0).generator.get_state(),
        ...                        "samples_done": 2})
        >>> list(order.sampler(range(5)))
        [1, 3, 2]
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self._sampler: ResumableRandomSampler | ResumableDistributedSampler | None = None
        self._resume_state: Tensor | None = None
        self._skip = 0

    def sampler(self, dataset: Any, trainer: Any = None) -> ResumableRandomSampler | ResumableDistributedSampler:
        """The train sampler over ``dataset`` (sharded when ``trainer`` runs several processes)."""
        resume = {"resume_state": self._resume_state, "skip": self._skip}
        if _distributed(trainer):
            self._sampler = ResumableDistributedSampler(
                dataset,
                generator=self.generator,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                shuffle=True,
                seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # what Lightning's own DistributedSampler uses
                **resume,
            )
        else:
            self._sampler = ResumableRandomSampler(dataset, self.generator, **resume)
        self._resume_state, self._skip = None, 0
        return self._sampler

    def state_dict(self, trainer: Any, batch_size: int) -> dict[str, Any]:
        """The generator's state, and the epoch's order state and samples done when ``trainer`` is mid-epoch."""
        state: dict[str, Any] = {"train_generator_state": self.generator.get_state()}
        done = batches_done_in_epoch(trainer)
        if done and self._sampler is not None and self._sampler.order_state is not None:
            state["order_generator_state"] = self._sampler.order_state
            state["samples_done"] = done * batch_size
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: the next sampler continues the interrupted epoch, or starts the next one."""
        if "train_generator_state" in state:
            self.generator.set_state(state["train_generator_state"])
        if state.get("samples_done"):
            self._resume_state, self._skip = state["order_generator_state"], int(state["samples_done"])
            if self._sampler is not None:  # a loader built before the restore
                self._sampler.resume_state, self._sampler.skip = self._resume_state, self._skip


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


class ImageClassificationDataModule(L.LightningDataModule):
    """Base of the datamodules: a train set (optionally split into train/val), a test set, and their loaders.

    Subclasses set the class attributes below and implement :meth:`load_train_dataset`, :meth:`load_test_dataset`
    (returning untransformed samples) and :meth:`default_train_transform` / :meth:`default_eval_transform`.

    Validation comes from ``val_split`` samples carved out of the train set with a ``torch.Generator`` seeded from
    ``seed``; the carved samples go through the eval transform, never the augmented one. With ``val_split=0`` the
    validation loader serves the test set, the convention of the knowledge-distillation literature (the CIFAR tables
    report test accuracy every epoch; ImageNet's labelled "val" folder is its test set); carve a split for model
    selection that does not look at the test set.

    Determinism: the split is a function of ``seed`` alone. The train loader shuffles with one ``torch.Generator``
    seeded from ``seed`` and kept by the datamodule, so epoch k's order is the same in every run with that seed while
    each epoch gets a new order (the generator advances; reloading the loader does not rewind it). The same generator
    draws the DataLoader's per-epoch base seed, from which PyTorch seeds ``torch``, ``random`` and ``numpy`` in each
    worker, so worker-side augmentation is reproducible too; ``seed_everything(..., workers=True)`` additionally
    installs Lightning's ``worker_init_fn``, which derives from that base seed and the rank. With ``num_workers=0`` the
    augmentation draws from the global torch RNG: call ``seed_everything`` for reproducible crops and flips. The
    generator's state is saved in the checkpoint (:meth:`state_dict`), with the position within the epoch
    (:class:`TrainOrder`), so a resumed run sees the orders an uninterrupted run would, from the sample where it
    stopped. Under DDP the sampler is Lightning's ``DistributedSampler`` (seeded from ``seed_everything``'s seed), made
    resumable, and the generator then only seeds the workers; being the same on every rank, it gives every rank the
    same worker seeds, so use ``seed_everything(seed, workers=True)``, whose ``worker_init_fn``
    mixes in the rank.

    Args:
        data_dir: Folder holding the dataset files (each subclass documents the layout it expects).
        batch_size: Train batch size.
        eval_batch_size: Batch size of the validation and test loaders; defaults to ``batch_size``.
        num_workers: DataLoader worker processes; 0 loads in the main process.
        pin_memory: Pin host memory for faster host-to-GPU copies; defaults to ``torch.cuda.is_available()``.
        persistent_workers: Keep workers alive between epochs; defaults to ``num_workers > 0``.
        val_split: Validation samples carved from the train set: an int count or a float fraction in [0, 1).
        seed: Seed of the train/val split and of the train loader's shuffling.
        augment: Apply the dataset's standard train augmentation; ``False`` trains on eval-transformed images.
        drop_last: Drop the last incomplete train batch (validation and test never drop).
        mean: Per-channel normalization mean; defaults to the dataset's statistics.
        std: Per-channel normalization std; defaults to the dataset's statistics.
        train_transform: Replaces the default train transform entirely (``augment`` is then ignored).
        eval_transform: Replaces the default eval transform entirely.
        num_views: Train on views as data (:class:`AugmentedViews` of the train subset, seeded by ``seed``): view
            ``e % num_views`` of every sample in epoch ``e``; needs a train transform that draws views
            (``TensorImageTransform``). ``None``: augmentation from the global RNG, as usual. :attr:`train_views`
            may be replaced by an :class:`~lightning_advkd.AugmentedViewCache` of the same views, which the train
            loader then reads in the same order.

    Raises:
        ValueError: On a non-positive batch size, negative workers, a malformed ``val_split``, or a ``mean``/``std``
            whose length is not ``in_chans``.
    """

    #: Number of classes; ``None`` for unlabeled data.
    num_classes: int | None = None
    #: Channels of the images the loaders yield.
    in_chans: int = 3
    #: Side of the square images the loaders yield.
    image_size: int = 32
    #: Default per-channel normalization mean.
    mean: tuple[float, ...] = ()
    #: Default per-channel normalization std.
    std: tuple[float, ...] = ()

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        val_split: int | float = 0,
        seed: int = 0,
        augment: bool = True,
        drop_last: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        train_transform: Transform | None = None,
        eval_transform: Transform | None = None,
        num_views: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(
                f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}"
            )
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        check_val_split(val_split)
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = (
            num_workers > 0 if persistent_workers is None else persistent_workers and num_workers > 0
        )
        self.val_split = val_split
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.mean = tuple(float(m) for m in (mean if mean is not None else type(self).mean))
        self.std = tuple(float(s) for s in (std if std is not None else type(self).std))
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean and std need {self.in_chans} values (one per channel), got {self.mean}, {self.std}")
        self._train_transform_override = train_transform
        self._eval_transform_override = eval_transform
        if num_views is not None and num_views < 1:
            raise ValueError(f"num_views must be >= 1 (or None: no views), got {num_views}")
        self.num_views = num_views
        #: What the train loader reads when views are on: ``AugmentedViews`` or a cache of them.
        self.train_views: Dataset | None = None

        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._train_base: Dataset | None = None
        self._test_base: Dataset | None = None
        #: The train order and its position within the epoch (checkpointed: exact resume mid-epoch).
        self._train_order = TrainOrder(seed)
        self._train_generator = self._train_order.generator

    # ---- to implement -------------------------------------------------------------------------------------------

    def load_train_dataset(self) -> Dataset:
        """The full training set, untransformed: ``(image, label)`` samples (or bare images when unlabeled)."""
        raise NotImplementedError

    def load_test_dataset(self) -> Dataset | None:
        """The test set, untransformed; ``None`` when the dataset has none."""
        raise NotImplementedError

    def default_train_transform(self) -> Transform:
        """The dataset's standard augmentation followed by :func:`to_normalized_tensor`."""
        raise NotImplementedError

    def default_eval_transform(self) -> Transform:
        """The dataset's deterministic eval pipeline followed by :func:`to_normalized_tensor`."""
        raise NotImplementedError

    def check_files(self) -> None:
        """Raise ``FileNotFoundError`` naming the expected files and the fix when the data is not on disk."""

    # ---- transforms ---------------------------------------------------------------------------------------------

    @property
    def train_transform(self) -> Transform:
        """The transform of the train subset: the override, the augmentation, or the eval transform."""
        if self._train_transform_override is not None:
            return self._train_transform_override
        return self.default_train_transform() if self.augment else self.eval_transform

    @property
    def eval_transform(self) -> Transform:
        """The deterministic transform of the validation and test sets."""
        if self._eval_transform_override is not None:
            return self._eval_transform_override
        return self.default_eval_transform()

    # ---- Lightning hooks ----------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Check the files exist (subclasses that can download do so here)."""
        self.check_files()

    def setup(self, stage: str | None = None) -> None:
        """Load the datasets a stage needs, once; ``setup`` may be called again for later stages."""
        if stage in (None, "fit", "validate") and self.train_set is None:
            self._setup_train_val()
        if stage in (None, "test", "predict") and self.test_set is None:
            self._setup_test()

    def train_dataloader(self) -> DataLoader:
        """Shuffled train loader; see the class docstring for its seeding."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        if self.train_views is not None:
            # Under DDP Lightning shards the view sampler itself: no position within the epoch is kept then.
            order = self._train_order.sampler(self.train_views) if not _distributed(self.trainer) else None
            return view_loader(
                self.train_views, self.batch_size, shuffle=True, generator=self._train_generator, order=order,
                drop_last=self.drop_last, num_workers=self.num_workers, pin_memory=self.pin_memory,
                persistent_workers=self.persistent_workers,
            )  # fmt: skip
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation loader, in order; an empty list (no validation) when there is nothing to validate on."""
        if self.train_set is None:
            self.setup("validate")
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test loader, in order."""
        if self.test_set is None:
            self.setup("test")
        if self.test_set is None:
            raise RuntimeError(f"{type(self).__name__} has no test set")
        return self._loader(self.test_set, self.eval_batch_size, train=False)

    def state_dict(self) -> dict[str, Any]:
        """The shuffling generator's state, and the position within the epoch when saved mid-epoch.

        With the position (:class:`TrainOrder`), a resumed run continues the same sequence of epoch orders from where
        it stopped.
        """
        return {"seed": self.seed, **self._train_order.state_dict(self.trainer, self.batch_size)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, in place: a loader already built keeps the same generator object."""
        self._train_order.load_state_dict(state_dict)

    # ---- helpers ------------------------------------------------------------------------------------------------

    def _setup_train_val(self) -> None:
        if self._train_base is None:
            self.check_files()
            self._train_base = self.load_train_dataset()
        n = len(self._train_base)  # type: ignore[arg-type]
        n_val = split_size(self.val_split, n)
        if n_val > 0:
            train_idx, val_idx = seeded_split(n, n_val, self.seed)
            self.train_set = TransformedSubset(self._train_base, train_idx, self.train_transform)
            self.val_set = TransformedSubset(self._train_base, val_idx, self.eval_transform)
        else:
            self.train_set = TransformedSubset(self._train_base, None, self.train_transform)
            self.val_set = self._default_val_set()
        if self.num_views is not None and self.train_views is None:
            self.train_views = AugmentedViews.from_subset(self.train_set, num_views=self.num_views, seed=self.seed)

    def _default_val_set(self) -> Dataset | None:
        """Validation set when no split is carved: the test set (see the class docstring)."""
        self._setup_test()
        return self.test_set

    def _setup_test(self) -> None:
        if self.test_set is not None:
            return
        if self._test_base is None:
            self.check_files()
            self._test_base = self.load_test_dataset()
        if self._test_base is not None:
            self.test_set = TransformedSubset(self._test_base, None, self.eval_transform)

    def _loader(self, dataset: Dataset, batch_size: int, *, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._train_order.sampler(dataset, self.trainer) if train else None,
            drop_last=self.drop_last and train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=self._train_generator if train else None,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(data_dir={str(self.data_dir)!r}, num_classes={self.num_classes}, "
            f"in_chans={self.in_chans}, image_size={self.image_size}, batch_size={self.batch_size}, "
            f"val_split={self.val_split!r}, seed={self.seed}, augment={self.augment})"
        )
