"""The run's loggers: built from group ``logger``, W&B runs named, grouped and tagged, the config and the student
recorded."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from lightning_advkd.app.config import build, has_discriminator, resolved
from lightning_advkd.app.launch import sweep_name
from lightning_advkd.app.wandb_setup import run_identity


def instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    """Every logger of ``cfg.logger``; a W&B logger gets the run's group, job type and tags unless the config sets
    them."""
    regularizers = list((cfg.get("regularizer") or {}).keys()) if has_discriminator(cfg) else []
    identity = run_identity(cfg.dataset.name, cfg.pair.name, cfg.method.name, cfg.task, regularizers, sweep_name())
    loggers: list[Logger] = []
    for name, node in (cfg.get("logger") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        kwargs = {}
        if node._target_.endswith("WandbLogger"):
            kwargs = {key: value for key, value in identity.items() if node.get(key) is None}
        loggers.append(build(f"logger {name}", node, **kwargs))
    return loggers


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """The resolved config as the run's hyper-parameters (W&B's run config); starts the W&B run."""
    config = resolved(cfg)
    for logger in loggers:
        logger.log_hyperparams(config)


def log_student_artifact(cfg: DictConfig, loggers: list[Logger], path: Path, metrics: dict[str, float]) -> None:
    """With ``logger.wandb.log_model``: the trained student's ``state_dict`` as a W&B model artifact (the Lightning
    checkpoints go up too, through ``WandbLogger`` itself)."""
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
