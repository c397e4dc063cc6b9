"""The run's checkpoints besides the best one: ``last.ckpt``, refreshed at every epoch end and when the job is stopped.

The best-checkpoint policy (group ``callbacks``, ``model_checkpoint``) keeps the epoch with the best validation
accuracy; what a resumed run needs is the latest state instead. ``callbacks/last_checkpoint.yaml`` keeps it in
``last.ckpt`` with a second ``ModelCheckpoint`` (no monitor, every epoch), and :class:`PreemptionCheckpoint` writes
the same file when a scheduler stops the job with SIGTERM.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

log = logging.getLogger("lightning_advkd.train")

#: The exit status of a preempted job: what a shell reports for a process killed by SIGTERM (128 + 15).
PREEMPTED_EXIT_CODE = 128 + int(signal.SIGTERM)


class PreemptionCheckpoint(Checkpoint):
    """Saves a resumable checkpoint when the job is stopped with SIGTERM, and makes the process exit non-zero.

    SLURM and Kubernetes stop a job with SIGTERM. Lightning (2.6) notes the signal on every rank and raises
    ``SIGTERMException``, a ``SystemExit`` without a status, at the next batch boundary: nothing is saved and the
    process exits with status 0, so the scheduler counts the preempted job as a success. This callback saves the
    checkpoint then (on every rank together, as ``Trainer.save_checkpoint`` requires) and gives the exception the
    status ``128 + SIGTERM`` (143) that a process killed by the signal would have. The checkpoint holds the position
    within the epoch (the package's datamodules save it), so ``ckpt_path=`` resumes exactly where the job stopped.
    Lightning's own SLURM support is untouched: with ``SLURMEnvironment(auto_requeue=True)`` the requeue signal still
    saves Lightning's ``hpc_ckpt_*.ckpt`` and requeues the job.

    Args:
        dirpath: Folder of the checkpoint.
        filename: Its name without ``.ckpt``; ``last`` by default, the file a resumed run is pointed to.

    Raises:
        ValueError: When ``filename`` is empty.

    Example:
        >>> callback = PreemptionCheckpoint("checkpoints")
        >>> str(callback.ckpt_path), PREEMPTED_EXIT_CODE
        ('checkpoints/last.ckpt', 143)
    """

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        super().__init__()
        if not filename:
            raise ValueError("PreemptionCheckpoint needs a filename, e.g. filename='last'")
        self.dirpath = Path(dirpath)
        self.filename = filename

    @property
    def ckpt_path(self) -> Path:
        """Where the checkpoint is written."""
        return self.dirpath / f"{self.filename}.ckpt"

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(dirpath=str(self.dirpath), filename=self.filename)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        exception.code = PREEMPTED_EXIT_CODE
        if trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.ckpt_path)
        if trainer.is_global_zero:
            log.warning(
                "Stopped by SIGTERM at epoch %d, step %d: saved %s (resume with ckpt_path=%s); exit code %d",
                trainer.current_epoch,
                trainer.global_step,
                self.ckpt_path,
                self.ckpt_path,
                PREEMPTED_EXIT_CODE,
            )


__all__ = ["PREEMPTED_EXIT_CODE", "PreemptionCheckpoint"]
