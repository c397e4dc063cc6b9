"""A guard against collapsing adversarial distillation: a saturated discriminator or falling teacher agreement."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_advkd.regularizer import DiscriminatorRegularizer

Action = Literal["warn", "strengthen", "stop"]


class CollapseGuard(Callback):
    """Detects a collapsing ANC run and acts on it, so a run never silently trains on in a degenerate state.

    Two symptoms are watched:

    * **a saturated discriminator**: its training accuracy (an exponential moving average over student steps,
      averaged across processes) stays above ``saturation_threshold`` for ``patience_steps`` steps in a row; the
      student's adversarial signal has then vanished (the "trivially strong discriminator" of the paper);
    * **falling agreement**: the label-free validation metric ``monitor`` (student-teacher agreement by default)
      drops more than ``max_drop`` below its best value for ``patience_epochs`` validation runs in a row.

    Actions: ``"warn"`` logs a warning; ``"strengthen"`` multiplies the strength of every attached
    :class:`~lightning_advkd.regularizer.DiscriminatorRegularizer` by ``strengthen_factor`` (and warns);
    ``"stop"`` ends training with the reason in the log and in :attr:`reason`. Each symptom acts once per episode:
    it re-arms when the symptom clears.

    Args:
        action: what to do on a symptom.
        saturation_threshold: discriminator accuracy regarded as saturated.
        patience_steps: consecutive student steps above the threshold before acting.
        ema: smoothing of the discriminator accuracy (weight of the newest step).
        monitor: validation metric of teacher agreement; ``None`` disables that check.
        max_drop: tolerated drop of ``monitor`` below its best, in its own units.
        patience_epochs: consecutive validation runs below ``best - max_drop`` before acting.
        strengthen_factor: multiplier applied to the regularizers' strength by ``"strengthen"``.

    Raises:
        ValueError: on an unknown action or out-of-range thresholds.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[CollapseGuard(action="stop")], logger=False)
    """

    def __init__(
        self,
        action: Action = "warn",
        saturation_threshold: float = 0.95,
        patience_steps: int = 200,
        ema: float = 0.05,
        monitor: str | None = "val/agreement",
        max_drop: float = 0.05,
        patience_epochs: int = 2,
        strengthen_factor: float = 2.0,
    ) -> None:
        if action not in ("warn", "strengthen", "stop"):
            raise ValueError(f"CollapseGuard: action must be 'warn', 'strengthen' or 'stop', got {action!r}")
        if not 0.5 < saturation_threshold <= 1.0:
            raise ValueError(f"CollapseGuard: saturation_threshold must be in (0.5, 1], got {saturation_threshold}")
        if not 0.0 < ema <= 1.0:
            raise ValueError(f"CollapseGuard: ema must be in (0, 1], got {ema}")
        if patience_steps < 1 or patience_epochs < 1:
            raise ValueError("CollapseGuard: patience_steps and patience_epochs must be >= 1")
        if strengthen_factor <= 1.0:
            raise ValueError(f"CollapseGuard: strengthen_factor must be > 1, got {strengthen_factor}")
        self.action = action
        self.saturation_threshold = saturation_threshold
        self.patience_steps = patience_steps
        self.ema = ema
        self.monitor = monitor
        self.max_drop = max_drop
        self.patience_epochs = patience_epochs
        self.strengthen_factor = strengthen_factor
        self.accuracy_ema: float | None = None
        self.saturated_steps = 0
        self.best_agreement: float | None = None
        self.low_epochs = 0
        self.reason: str | None = None

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        accuracy = getattr(pl_module, "discriminator_accuracy", None)
        if accuracy is None:
            return
        value = float(trainer.strategy.reduce(accuracy.detach(), reduce_op="mean"))
        self.accuracy_ema = (
            value if self.accuracy_ema is None else (1 - self.ema) * self.accuracy_ema + self.ema * value
        )
        pl_module.log("train/d_acc_ema", self.accuracy_ema, on_step=True, on_epoch=False)
        if self.accuracy_ema <= self.saturation_threshold:
            self.saturated_steps = 0
            return
        self.saturated_steps += 1
        if self.saturated_steps == self.patience_steps:  # once per episode
            self._act(
                trainer,
                f"the discriminator is saturated: its accuracy (moving average {self.accuracy_ema:.3f}) stayed above "
                f"{self.saturation_threshold} for {self.patience_steps} steps, so the student's adversarial signal "
                "has vanished",
            )

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        agreement = float(trainer.callback_metrics[self.monitor])
        if self.best_agreement is None or agreement > self.best_agreement:
            self.best_agreement, self.low_epochs = agreement, 0
            return
        if agreement >= self.best_agreement - self.max_drop:
            self.low_epochs = 0
            return
        self.low_epochs += 1
        if self.low_epochs == self.patience_epochs:
            self._act(
                trainer,
                f"{self.monitor} fell to {agreement:.4f}, more than {self.max_drop} below its best "
                f"{self.best_agreement:.4f}, for {self.patience_epochs} validation runs",
            )

    def _act(self, trainer: L.Trainer, symptom: str) -> None:
        if self.action == "stop":
            self.reason = f"training stopped by CollapseGuard: {symptom}"
            trainer.should_stop = True
            rank_zero_warn(self.reason + ". Strengthen the discriminator regularizer or lower the discriminator's lr.")
            return
        if self.action == "strengthen":
            callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's callback connector
            regularizers = [cb for cb in callbacks if isinstance(cb, DiscriminatorRegularizer)]
            for regularizer in regularizers:
                regularizer.strengthen(self.strengthen_factor)
            names = [r.name for r in regularizers] or ["none attached: nothing to strengthen"]
            rank_zero_warn(f"CollapseGuard: {symptom}; regularizer strength x{self.strengthen_factor} ({names})")
            return
        rank_zero_warn(f"CollapseGuard: {symptom}. Consider a stronger discriminator regularizer.")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "accuracy_ema": self.accuracy_ema, "saturated_steps": self.saturated_steps,
            "best_agreement": self.best_agreement, "low_epochs": self.low_epochs, "reason": self.reason,
        }  # fmt: skip

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
