"""How the job was launched: a single run or a job of a Hydra multirun, and the combination that would hang."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig

from lightning_advkd.app.compat import IncompatibleConfigError


def sweep_name() -> str | None:
    """The name of the multirun this job belongs to (its sweep directory), ``None`` for a single run."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


def check_launch(cfg: DictConfig) -> None:
    """Refuse the combination that hangs: a Hydra multirun with Lightning's subprocess DDP on one machine.

    Raises:
        IncompatibleConfigError: Naming the two ways that work.
    """
    if sweep_name() is None or "SLURM_NTASKS" in os.environ:
        return
    trainer = cfg.trainer
    strategy = str(trainer.get("strategy", "auto"))
    devices = trainer.get("devices", 1)
    several = (isinstance(devices, int) and (devices > 1 or devices == -1)) or (
        isinstance(devices, (list, ListConfig)) and len(devices) > 1
    )
    subprocess_ddp = strategy.startswith("ddp") and not strategy.startswith(("ddp_spawn", "ddp_fork", "ddp_notebook"))
    if several and subprocess_ddp:
        raise IncompatibleConfigError(
            f"--multirun with strategy={strategy} on {devices} devices: Lightning starts the other ranks by re-running "
            "the command line, which re-runs the whole sweep in each of them. Run the jobs one by one, or launch the "
            "sweep with hydra/launcher=slurm (one allocation per job, where ddp works)."
        )


__all__ = ["check_launch", "sweep_name"]
