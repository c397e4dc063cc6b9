"""The run's loggers: built from group ``logger``, W&B runs named, grouped and tagged.

The run's config and its trained student are recorded through them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from lightning_advkd.app.config import build, has_discriminator, resolved
from lightning_advkd.app.launch import sweep_name
from lightning_advkd.app.wandb_setup import finish_wandb, run_identity

log = logging.getLogger(__name__)


def instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    """Every logger of ``cfg.logger``.

    A W&B logger gets the run's group, job type and tags unless the config sets them.
    """
    loggers: list[Logger] = []
    for name, node in (cfg.get("logger") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        kwargs = _wandb_kwargs(cfg, node) if node._target_.endswith("WandbLogger") else {}
        loggers.append(build(f"logger {name}", node, **kwargs))
    return loggers


def _wandb_kwargs(cfg: DictConfig, node: DictConfig) -> dict[str, Any]:
    """The run's group, job type and tags where the config leaves them null; ``settings`` as plain data."""
    regularizers = list((cfg.get("regularizer") or {}).keys()) if has_discriminator(cfg) else []
    identity = run_identity(cfg.dataset.name, cfg.pair.name, cfg.method.name, cfg.task, regularizers, sweep_name())
    kwargs: dict[str, Any] = {key: value for key, value in identity.items() if node.get(key) is None}
    if node.get("settings") is not None:  # wandb.init wants plain data, not an OmegaConf node
        kwargs["settings"] = OmegaConf.to_container(node.settings, resolve=True)
    return kwargs


def log_config(loggers: list[Logger], cfg: DictConfig) -> list[Logger]:
    """The resolved config as the run's hyper-parameters (W&B's run config); starts the W&B run.

    A W&B run that cannot start online (no network, server down: ``wandb.init`` gives up after the logger's
    ``settings.init_timeout`` seconds) is started offline instead, with a warning naming the ``wandb sync`` fix; the
    loggers actually used are returned.
    """
    config = resolved(cfg)
    started = []
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger = _start_wandb(logger, cfg)
        logger.log_hyperparams(config)
        started.append(logger)
    return started


def _start_wandb(logger: WandbLogger, cfg: DictConfig) -> WandbLogger:
    """Start the run (``logger.experiment``); when an online start fails, build the same logger offline."""
    (name, node), *_ = [(k, v) for k, v in cfg.logger.items() if str(v.get("_target_", "")).endswith("WandbLogger")]
    try:
        logger.experiment  # noqa: B018 - the property starts wandb.init
        return logger
    except Exception as err:  # wandb's CommError, UsageError and timeouts all deserve the same fallback
        if node.get("mode") in ("offline", "disabled"):
            raise
        finish_wandb(exit_code=1)
        log.warning(
            "W&B could not start an online run (%s: %s); logging offline instead. Upload the run later with "
            "`wandb sync <run dir>/wandb/offline-run-*`, or set WANDB_MODE=offline to skip the attempt.",
            type(err).__name__, err,
        )  # fmt: skip
        return build(f"logger {name} (offline)", node, **_wandb_kwargs(cfg, node), mode="offline")


def log_student_artifact(cfg: DictConfig, loggers: list[Logger], path: Path, metrics: dict[str, float]) -> None:
    """With ``logger.wandb.log_model``: the trained student's ``state_dict`` as a W&B model artifact.

    The Lightning checkpoints go up too, through ``WandbLogger`` itself.
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger) and cfg.logger.wandb.get("log_model"):
            import wandb

            metadata = {
                "arch": cfg.pair.student.model.name,
                "pair": cfg.pair.name,
                "method": cfg.method.name,
                "dataset": cfg.dataset.name,
                "test/student_acc": metrics.get("test/student_acc"),
            }
            artifact = wandb.Artifact(f"student-{logger.experiment.id}", type="model", metadata=metadata)
            artifact.add_file(str(path), name="student.pt")
            logger.experiment.log_artifact(artifact, aliases=["latest"])


__all__ = ["instantiate_loggers", "log_config", "log_student_artifact"]
