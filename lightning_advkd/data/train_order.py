"""The train loader's shuffled order as checkpoint state: samplers that resume part way through an epoch."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sized
from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, RandomSampler

log = logging.getLogger(__name__)


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


def is_distributed(trainer: Any) -> bool:
    """Whether ``trainer`` runs several processes (DDP); ``False`` outside a trainer."""
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
        if is_distributed(trainer):
            self._sampler = ResumableDistributedSampler(
                dataset,
                generator=self.generator,
                num_replicas=trainer.world_size,
                rank=trainer.global_rank,
                shuffle=True,
                seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # what Lightning's own DistributedSampler uses
                resume_state=self._resume_state,
                skip=self._skip,
            )
        else:
            self._sampler = ResumableRandomSampler(
                dataset, self.generator, resume_state=self._resume_state, skip=self._skip
            )
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
