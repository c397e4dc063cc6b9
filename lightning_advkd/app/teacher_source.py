"""Where a run's teacher comes from.

In order: ``pair.teacher.checkpoint``, else the reference teacher shipped for the pair (``pair.teacher.reference``,
when the run's dataset is the one it was trained on and ``teacher_training.retrain`` is off), else the teacher cache,
else trained now and cached.

The cache itself (keys, files, loading) is :mod:`lightning_advkd.app.teachers`; this module decides which source a run
uses, trains a missing teacher with ``teacher_training``, and tests a teacher for ``task=teacher``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lightning_advkd.app.callback_list import progress_bars
from lightning_advkd.app.compat import DatasetShape
from lightning_advkd.app.config import build, merged, plain
from lightning_advkd.app.loggers import instantiate_loggers, log_config
from lightning_advkd.app.results import summarize, trainer_metrics
from lightning_advkd.app.teachers import (
    ReferenceTeacher,
    cached_teacher,
    cached_teacher_path,
    load_reference_teacher,
    load_teacher,
    recipe_key,
    reference_teacher,
    teacher_recipe,
)

log = logging.getLogger("lightning_advkd.train")


def build_network(cfg: DictConfig, role: str, num_classes: int, shape: DatasetShape) -> nn.Module:
    """The pair's ``teacher`` or ``student`` network, for the dataset's classes and channels."""
    node = cfg.pair[role].model
    return build(role, node, detail=str(node.get("name")), num_classes=num_classes, in_chans=shape.in_chans)


def obtain_teacher(
    cfg: DictConfig,
    shape: DatasetShape,
    num_classes: int,
    output_dir: Path,
    *,
    allow_training: bool,
    loggers: list[Logger] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher, in eval mode, and where it came from (``source``, ``path``, and the cache's record).

    Raises:
        MissingTeacherError: When it is neither given nor cached and ``allow_training`` is false (``task=evaluate``),
            with the command that trains it.
    """
    teacher = build_network(cfg, "teacher", num_classes, shape)
    how_to_train = f"advkd-train task=teacher dataset={cfg.dataset.name} pair={cfg.pair.name}"
    given = cfg.pair.teacher.get("checkpoint")
    if given:
        log.info("Loading the teacher from %s", given)
        load_teacher(teacher, given, how_to_train=how_to_train)
        return teacher.eval(), {"source": "checkpoint", "path": str(given)}
    reference = _usable_reference(cfg, shape, num_classes)
    if reference is not None:
        load_reference_teacher(teacher, reference)
        log.info(
            "Using the reference teacher %s shipped with the package (%s, %.2f %% test accuracy, sha256 verified); "
            "teacher_training.retrain=true trains one instead",
            reference.name,
            reference.path,
            100 * reference.meta["test_acc"],
        )
        info = {k: reference.meta.get(k) for k in ("name", "sha256", "test_acc", "command", "recipe")}
        return teacher.eval(), {"source": "reference", "path": str(reference.path), **info}
    training = cfg.teacher_training
    dm_cfg = merged(cfg.dataset.datamodule, training.get("datamodule"))
    trainer_cfg = merged(cfg.trainer, training.get("trainer"))
    recipe = teacher_recipe(
        dataset=dm_cfg,
        model=plain(cfg.pair.teacher.model),
        module=plain(training.module),
        trainer=trainer_cfg,
        seed=int(cfg.seed),
        num_classes=num_classes,
        in_chans=shape.in_chans,
    )
    key = recipe_key(recipe)
    path = cached_teacher_path(cfg.paths.cache_dir, cfg.pair.teacher.model.name, key)
    save = bool(training.get("cache", True))

    def train(model: nn.Module) -> dict[str, Any]:
        log.info("Training the teacher %s with labels (cached afterwards as %s)", cfg.pair.teacher.model.name, path)
        started = time.perf_counter()
        val_acc = _train_teacher(cfg, model, dm_cfg, trainer_cfg, num_classes, output_dir, loggers)
        meta = {"key": key, "recipe": recipe, "val_acc": val_acc, "train_seconds": time.perf_counter() - started}
        log.info("Teacher trained in %.0f s (val acc %s)", meta["train_seconds"], val_acc)
        return meta

    teacher, meta, trained = cached_teacher(
        teacher,
        path,
        train if allow_training else None,
        how_to_train=f"{how_to_train} ...",
        retrain=bool(training.get("retrain", False)),
        save=save and allow_training,  # no lock file (nor folder) for a run that may not train
    )
    if not trained:
        log.info("Used the cached teacher %s", path)
        return teacher.eval(), {"source": "cache", "path": str(path), "key": key, **meta}
    if save:
        log.info("Teacher cached at %s", path)
    return teacher.eval(), {"source": "trained", "path": str(path) if save else None, **meta}


def teacher_task(cfg: DictConfig, shape: DatasetShape, num_classes: int, output_dir: Path) -> dict[str, float]:
    """``task=teacher``: train (or find) the teacher, test it with its training module, summarize, say where it is."""
    loggers = instantiate_loggers(cfg)
    log_config(loggers, cfg)
    teacher, info = obtain_teacher(cfg, shape, num_classes, output_dir, allow_training=True, loggers=loggers)
    datamodule = build("datamodule", cfg.dataset.datamodule)
    module = build("teacher module", cfg.teacher_training.module, model=teacher, num_classes=num_classes)
    trainer = build("trainer", cfg.trainer, callbacks=progress_bars(cfg), logger=loggers or False)
    log.info("Testing the teacher")
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = trainer_metrics(trainer)
    metrics["test/teacher_acc"] = metrics.get("test/acc", float("nan"))
    if trainer.is_global_zero:
        summarize(cfg, loggers, teacher, None, shape, metrics, output_dir, {"teacher": info})
        if info.get("path"):
            log.info(
                "Teacher saved at %s\nUse it with:  advkd-train dataset=%s pair=%s pair.teacher.checkpoint=%s",
                info["path"],
                cfg.dataset.name,
                cfg.pair.name,
                info["path"],
            )
    return metrics


def _usable_reference(cfg: DictConfig, shape: DatasetShape, num_classes: int) -> ReferenceTeacher | None:
    """The pair's reference teacher when it fits this run, else ``None`` (the reason logged)."""
    name = cfg.pair.teacher.get("reference")
    if not name:
        return None
    if cfg.teacher_training.get("retrain", False):
        log.info("teacher_training.retrain=true: training a teacher instead of the reference teacher %s", name)
        return None
    reference = reference_teacher(str(name))
    why = reference.mismatch(
        dataset=cfg.dataset.name,
        model=plain(cfg.pair.teacher.model),
        num_classes=num_classes,
        in_chans=shape.in_chans,
        datamodule=build("datamodule", cfg.dataset.datamodule),
    )
    if why:
        log.info("Not using the reference teacher %s: %s", name, why)
        return None
    return reference


def _train_teacher(
    cfg: DictConfig,
    teacher: nn.Module,
    dm_cfg: dict[str, Any],
    trainer_cfg: dict[str, Any],
    num_classes: int,
    output_dir: Path,
    loggers: list[Logger] | None,
) -> float | None:
    datamodule = build("teacher datamodule", OmegaConf.create(dm_cfg))
    module = build("teacher module", cfg.teacher_training.module, model=teacher, num_classes=num_classes)
    callbacks: list[Callback] = progress_bars(cfg)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer_node = OmegaConf.create({**trainer_cfg, "default_root_dir": str(output_dir / "teacher")})
    trainer = build(
        "teacher trainer", trainer_node, callbacks=callbacks, logger=loggers or False, enable_checkpointing=False
    )
    trainer.fit(module, datamodule=datamodule)
    _broadcast_from_rank_zero(teacher)
    value = trainer.callback_metrics.get("val/acc")
    return float(value) if value is not None else None


def _broadcast_from_rank_zero(model: nn.Module) -> None:
    """Make every process hold rank 0's teacher (BatchNorm statistics drift apart under DDP after the last step)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for tensor in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)


__all__ = ["build_network", "obtain_teacher", "teacher_task"]
