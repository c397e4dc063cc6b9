"""The whole configuration checked before anything trains: value types, paths, the method's module, the callbacks.

A bad option must cost seconds, not a teacher's training: :func:`validate` builds what the run will use from the
config (the method's module around untrained stand-ins of the pair's networks, the callbacks) and checks the values
and files it names, each error naming the key and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_advkd.app.callback_list import instantiate_callbacks
from lightning_advkd.app.compat import DatasetShape
from lightning_advkd.app.config import build, merged

log = logging.getLogger("lightning_advkd.train")

#: Trainer options that must be whole numbers, and those that may be a count or a fraction.
_INT_KEYS = ("max_epochs", "min_epochs", "max_steps", "check_val_every_n_epoch", "log_every_n_steps")
_COUNT_OR_FRACTION_KEYS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval")
#: What must match between a run and the run whose checkpoint it resumes.
_RESUME_KEYS = ("seed", "dataset.name", "pair.name", "method.name")


class ConfigError(ValueError):
    """An option of the run's configuration is wrong; the message names the key and the fix."""


def validate(cfg: DictConfig, shape: DatasetShape, num_classes: int) -> None:
    """Check everything ``cfg`` will use before any training (the teacher's included); :func:`check_checkpoint` first.

    Raises:
        ConfigError: On a Trainer value of the wrong type.
        ValueError, TypeError, KeyError: From the method's module or a callback refusing its options.
    """
    check_trainer_values(OmegaConf.to_container(cfg.trainer, resolve=True), "trainer")  # type: ignore[arg-type]
    teacher_trainer = merged(cfg.trainer, cfg.teacher_training.get("trainer"))
    check_trainer_values(teacher_trainer, "teacher_training.trainer")
    if cfg.task == "teacher":
        return
    instantiate_callbacks(cfg, has_logger=False)
    with torch.random.fork_rng(devices=[]):  # the stand-ins draw no number the real networks would
        _build_module_with_stand_ins(cfg, shape, num_classes)
    log.info("Configuration checked: trainer values, paths, method module, callbacks")


def check_trainer_values(trainer: Mapping[str, Any], prefix: str) -> None:
    """Refuse a Trainer option of the wrong type, naming the key (``trainer.max_epochs=ten``)."""
    for key in _INT_KEYS:
        value = trainer.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{prefix}.{key} must be a whole number, got {value!r}: e.g. {prefix}.{key}=10")
    for key in _COUNT_OR_FRACTION_KEYS:
        value = trainer.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(
                f"{prefix}.{key} must be a batch count (int) or a fraction (float in (0, 1]), got {value!r}"
            )


def check_checkpoint(cfg: DictConfig) -> None:
    """``ckpt_path``: required by ``task=evaluate``, an existing file, and from a run with the same seed and setup."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        if cfg.task == "evaluate":
            raise ConfigError(
                "task=evaluate needs ckpt_path=<checkpoint of a distillation run>, e.g. "
                "ckpt_path=outputs/distill/runs/<date>/checkpoints/last.ckpt, with the same dataset, pair and method"
            )
        return
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such file; give the last.ckpt of an earlier run's checkpoints/")
    saved = path.resolve().parent.parent / "config_resolved.yaml"  # <run>/checkpoints/<file>.ckpt
    if not saved.is_file():
        return
    before = OmegaConf.load(saved)
    for key in _RESUME_KEYS:
        old, new = OmegaConf.select(before, key), OmegaConf.select(cfg, key)
        if old is not None and old != new:
            raise ConfigError(
                f"ckpt_path={ckpt_path} comes from a run with {key}={old}, this run has {key}={new}: resume with "
                f"{key}={old} (its teacher and data order depend on it), or start a new run without ckpt_path"
            )


def _build_module_with_stand_ins(cfg: DictConfig, shape: DatasetShape, num_classes: int) -> None:
    networks = {
        role: build(f"{role} stand-in", cfg.pair[role].model, num_classes=num_classes, in_chans=shape.in_chans)
        for role in ("teacher", "student")
    }
    input_shape = [shape.in_chans, shape.image_size, shape.image_size]
    build("module (check)", cfg.method.module, **networks, num_classes=num_classes, input_shape=input_shape)


__all__ = ["ConfigError", "check_checkpoint", "check_trainer_values", "validate"]
