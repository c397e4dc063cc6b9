"""The run's callbacks: group ``callbacks``, plus group ``regularizer`` for a method with a discriminator."""

from __future__ import annotations

import logging

from hydra.utils import get_class
from lightning.pytorch.callbacks import Callback, ProgressBar
from omegaconf import DictConfig

from lightning_advkd.app.config import build, has_discriminator

log = logging.getLogger("lightning_advkd.train")


def _nodes(cfg: DictConfig, group: str) -> dict[str, DictConfig]:
    return {
        name: node
        for name, node in (cfg.get(group) or {}).items()
        if isinstance(node, DictConfig) and "_target_" in node
    }


def instantiate_callbacks(cfg: DictConfig, *, has_logger: bool) -> list[Callback]:
    """The config's callbacks (the learning-rate monitor only with a logger), then the discriminator regularizers.

    The regularizers attach when the method's module takes a discriminator; otherwise they are listed as unused.
    """
    callbacks: list[Callback] = []
    for name, node in _nodes(cfg, "callbacks").items():
        if node._target_.endswith("LearningRateMonitor") and not has_logger:
            log.info("Skipping callback %s: it needs a logger (logger=none)", name)
            continue
        callbacks.append(build(f"callback {name}", node))
    regularizers = _nodes(cfg, "regularizer")
    if not has_discriminator(cfg):
        if regularizers:
            log.info(
                "method %s has no discriminator: regularizers %s are not used", cfg.method.name, list(regularizers)
            )
        return callbacks
    if not regularizers:
        log.info("No discriminator regularizer (regularizer=none): the unregularized baseline")
    callbacks.extend(build(f"regularizer {name}", node) for name, node in regularizers.items())
    return callbacks


def progress_bars(cfg: DictConfig) -> list[Callback]:
    """Only the progress-bar callbacks of ``cfg.callbacks`` (for the teacher's training and testing)."""
    nodes = _nodes(cfg, "callbacks").values()
    return [build("callback", node) for node in nodes if issubclass(get_class(node._target_), ProgressBar)]


__all__ = ["instantiate_callbacks", "progress_bars"]
