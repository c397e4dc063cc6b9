"""A datamodule whose batches carry the frozen teacher's outputs, computed once instead of at every step."""

from __future__ import annotations

import logging
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any, cast

import lightning as L
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from lightning_advkd.collate import collate_samples
from lightning_advkd.data.train_order import TrainOrder
from lightning_advkd.teacher_cache import TeacherOutputCache
from lightning_advkd.view_cache import AugmentedViewCache, cache_folder_name

log = logging.getLogger(__name__)


class TeacherOutputDataModule(L.LightningDataModule):
    """Wraps an image-classification datamodule; every split becomes a :class:`~lightning_advkd.TeacherOutputCache`.

    The teacher is frozen and in eval mode, so for inputs without random augmentation its features and logits never
    change: computing them once and reading them back is exact, and removes the teacher's forward pass from every
    training step (the dominant cost when the student is small). Data then lives in memory as tensors, so the loaders
    use no worker processes. The inner datamodule's ``num_classes``, ``in_chans``, ``image_size`` and batch sizes are
    kept.

    Args:
        datamodule: A datamodule built with ``augment=False`` (checked by the cache on its first sample).
        teacher: The frozen teacher the distillation module uses.
        teacher_tap: The teacher's feature tap, as given to the module.
        cache_dir: Where the outputs are kept on disk between runs (keyed by teacher weights and input bytes);
            ``None`` keeps them in memory only.
        batch_size: Batch size of the one pass over the data.
        seed: Seed of the train loader's shuffling generator (saved in checkpoints with the position within the epoch,
            so a resumed run sees the same epoch orders and continues an interrupted epoch where it stopped).
        progress: Show a progress bar while computing the outputs.
        attention_layers: Teacher layers whose attention maps are cached too (for attention transfer).

    Raises:
        ValueError: From the cache, when the inner datamodule augments its training images.
    """

    def __init__(
        self,
        datamodule: Any,
        teacher: nn.Module,
        *,
        teacher_tap: str | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 512,
        seed: int = 0,
        progress: bool = True,
        attention_layers: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.datamodule = datamodule
        self.teacher = teacher
        self.teacher_tap = teacher_tap
        self.cache_dir = cache_dir
        self.pass_batch_size = batch_size
        self.progress = progress
        self.attention_layers = tuple(attention_layers)
        self.num_classes = datamodule.num_classes
        self.in_chans = datamodule.in_chans
        self.image_size = datamodule.image_size
        self.batch_size = datamodule.batch_size
        self.eval_batch_size = getattr(datamodule, "eval_batch_size", datamodule.batch_size)
        self.drop_last = bool(getattr(datamodule, "drop_last", False))
        self._order = TrainOrder(seed)  # the train order and its position within the epoch, checkpointed
        self._cached: dict[int, TeacherOutputCache] = {}

    def _wrap(self, dataset: Dataset | None, name: str) -> TeacherOutputCache | None:
        if dataset is None:
            return None
        if id(dataset) not in self._cached:
            log.info(
                "Teacher outputs of the %s split (%d samples): read from the disk cache, or computed once",
                name,
                len(cast(Sized, dataset)),
            )
            self._cached[id(dataset)] = TeacherOutputCache(
                dataset,
                self.teacher,
                tap=self.teacher_tap,
                cache_dir=self._disk_cache_dir(),
                batch_size=self.pass_batch_size,
                progress=self.progress and self._is_global_zero(),
                attention_layers=self.attention_layers,
            )
        return self._cached[id(dataset)]

    def _disk_cache_dir(self) -> str | Path | None:
        # Several processes writing one cache file at once could corrupt it: under DDP each keeps its copy in memory.
        if self.trainer is not None and self.trainer.world_size > 1:
            return None
        return self.cache_dir

    def _is_global_zero(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    @override
    def prepare_data(self) -> None:
        self.datamodule.prepare_data()

    @override
    def setup(self, stage: str) -> None:
        self.datamodule.setup(stage)
        if stage == "fit":
            self._wrap(self.datamodule.train_set, "train")
        if stage in ("fit", "validate"):
            self._wrap(self.datamodule.val_set, "validation")
        if stage == "test":
            self._wrap(self.datamodule.test_set, "test")

    def _loader(self, dataset: Dataset | None, split: str, train: bool = False) -> DataLoader | list:
        cached = self._wrap(dataset, split)
        if cached is None:
            return []
        return DataLoader(
            cached,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=self._order.sampler(cached, self.trainer) if train else None,
            drop_last=self.drop_last and train,
            generator=self._order.generator if train else None,
            collate_fn=collate_samples,
        )

    @override
    def train_dataloader(self) -> DataLoader | list:
        return self._loader(self.datamodule.train_set, "train", train=True)

    @override
    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.datamodule.val_set, "validation")

    @override
    def test_dataloader(self) -> DataLoader | list:
        return self._loader(self.datamodule.test_set, "test")

    @override
    def state_dict(self) -> dict[str, Any]:
        return self._order.state_dict(self.trainer, self.batch_size)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "generator" in state_dict:  # checkpoints written before the position within the epoch was kept
            state_dict = {"train_generator_state": state_dict["generator"]}
        self._order.load_state_dict(state_dict)


def with_teacher_outputs(cfg: DictConfig, datamodule: Any, module: nn.Module) -> Any:
    """The datamodule with the frozen teacher's outputs cached, when the config asks for it.

    Caching applies when ``cfg.teacher_output_cache`` asks for it and the module runs a frozen teacher (the supervised
    baseline does not).

    Plain training images: a :class:`TeacherOutputDataModule`. Augmented ones drawn as views (the in-memory
    small-image datamodules): the datamodule itself, its training views replaced by an
    :class:`~lightning_advkd.AugmentedViewCache` (see :func:`with_view_cache`). Other augmentation cannot be replayed,
    so the teacher then runs at every step.
    """
    teacher = getattr(module, "teacher", None)
    if not cfg.get("teacher_output_cache", False) or not isinstance(teacher, nn.Module):
        return datamodule
    if getattr(datamodule, "augment", False):
        if hasattr(getattr(datamodule, "train_transform", None), "view_params"):
            return with_view_cache(cfg, datamodule, teacher)
        log.info("teacher-output cache off: this dataset's augmentation cannot be replayed from a cache")
        return datamodule
    log.info("Teacher-output cache on: the frozen teacher runs once per image instead of at every step")
    return TeacherOutputDataModule(
        datamodule,
        teacher,
        teacher_tap=cfg.pair.teacher.get("tap"),
        cache_dir=Path(cfg.paths.cache_dir).expanduser() / "teacher_outputs",
        seed=int(cfg.seed),
        attention_layers=cached_attention_layers(cfg),
    )


def cached_attention_layers(cfg: DictConfig) -> list[str]:
    """The teacher layers whose attention maps the method reads: attention transfer's and the discriminator's."""
    node = cfg.method.module
    pairs = list(node.get("attention_pairs") or []) if node.get("attention_weight") else []
    pairs += list(node.get("discriminator_layers") or [])
    return list(dict.fromkeys(str(teacher_layer) for _, teacher_layer in pairs))


def with_view_cache(cfg: DictConfig, datamodule: Any, teacher: nn.Module) -> Any:
    """Train on K augmented views per image whose teacher outputs are computed once and read back (exact).

    K is ``cfg.view_cache.num_views``, or one view per epoch (``trainer.max_epochs``) when it is ``null``; with fewer
    views than epochs the views are cycled. The cache lives under ``<paths.cache_dir>/teacher_views/``, keyed by the
    teacher, its tap, the images, the augmentation recipe, K, the seed and the storage dtype, and is reused by every
    later run with the same key. Validation and test images are not augmented: the teacher runs on them live.
    """
    options = cfg.get("view_cache") or {}
    num_views = options.get("num_views") or cfg.trainer.get("max_epochs")
    if not num_views or int(num_views) < 1:
        raise ValueError(
            "the view cache needs a number of views: set view_cache.num_views=K (trainer.max_epochs is not set)"
        )
    dtype = str(options.get("dtype", "float32"))
    datamodule.num_views = int(num_views)
    datamodule.setup("fit")
    tap = cfg.pair.teacher.get("tap")
    folder = Path(cfg.paths.cache_dir).expanduser() / "teacher_views"
    layers = cached_attention_layers(cfg)
    folder /= cache_folder_name(teacher, datamodule.train_views, tap=tap, dtype=dtype, attention_layers=layers)
    log.info("Teacher-output cache on augmented views: %d views per image in %s", int(num_views), folder)
    datamodule.train_views = AugmentedViewCache(
        datamodule.train_views, teacher, path=folder, tap=tap, dtype=dtype, batch_size=512, progress=True,
        attention_layers=layers,
    )  # fmt: skip
    return datamodule


__all__ = ["TeacherOutputDataModule", "cached_attention_layers", "with_teacher_outputs", "with_view_cache"]
