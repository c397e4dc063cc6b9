"""When the Trainer writes logs, so that per-step metric work can be skipped on the other steps."""

from __future__ import annotations

import lightning as L


def is_logging_step(trainer: L.Trainer, batches_trained: int) -> bool:
    """True on the training batches whose logged values the Trainer writes.

    The Trainer writes every ``log_every_n_steps`` batches counted over the whole fit (and when it stops); the caller
    passes its own count of the batches finished before this one, kept across epochs and resumes, as the module's
    ``batches_trained``.

    Example:
        >>> trainer = L.Trainer(log_every_n_steps=50, logger=False)
        >>> is_logging_step(trainer, 48), is_logging_step(trainer, 49)
        (False, True)
    """
    every = trainer.log_every_n_steps  # type: ignore[attr-defined]  # set in Trainer.__init__ by its logger connector
    return every > 0 and ((batches_trained + 1) % every == 0 or trainer.should_stop)
