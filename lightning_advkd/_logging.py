"""When the Trainer writes logs, so that per-step metric work can be skipped on the other steps."""

from __future__ import annotations

import lightning as L


def is_logging_step(trainer: L.Trainer) -> bool:
    """True on the steps whose logged values the Trainer writes (every ``log_every_n_steps`` batches).

    Uses the logger connector's own test (private API) so the two can never disagree.
    """
    return trainer._logger_connector.should_update_logs
