"""The shared base of the image-classification LightningDataModules: transforms, setup, loaders, seeding."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from lightning_advkd.data.splits import Transform, TransformedSubset, check_val_split, seeded_split, split_size
from lightning_advkd.data.train_order import TrainOrder, is_distributed
from lightning_advkd.data.views import AugmentedViews, view_loader

log = logging.getLogger(__name__)


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
            order = self._train_order.sampler(self.train_views) if not is_distributed(self.trainer) else None
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

    def test_dataloader(self) -> DataLoader | list:
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
