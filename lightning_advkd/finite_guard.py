"""A callback that catches non-finite state (gradients, weights, BatchNorm statistics), not only non-finite losses."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

log = logging.getLogger(__name__)

ACTIONS = ("stop", "skip")


class NonFiniteStateError(FloatingPointError):
    """A network's gradients, weights or buffers hold NaN or Inf; names the network, the tensor and the step."""


class FiniteStateGuard(Callback):
    """Stops (or skips the step) when gradients, weights or BatchNorm statistics become NaN or Inf.

    A finite loss does not mean a finite state: a batch of huge finite values (1e30) gives a finite loss but overflows
    BatchNorm's ``running_var`` to ``inf``, and training would go on and write the broken state into every checkpoint.
    Before every optimizer step the guard checks the step's gradients (one total norm; tensor by tensor only when it is
    not finite) and the buffers; every ``every_n_steps`` steps and on the last batch of each epoch (before the epoch's
    checkpoints are written) it checks every weight and buffer of the module.

    Args:
        action: ``"stop"`` raises :class:`NonFiniteStateError`; ``"skip"`` drops the step instead (its gradients are
            cleared, so no optimizer moves, and BatchNorm statistics are put back as they were before the batch),
            with a warning, and stops only when the weights themselves became non-finite.
        every_n_steps: How often (in optimizer steps, ``trainer.global_step``) all weights and buffers are checked.

    Raises:
        ValueError: On an unknown ``action`` or ``every_n_steps < 1``.
        NonFiniteStateError: During training, naming the network, the tensor and the step.

    Example:
        >>> guard = FiniteStateGuard(action="skip", every_n_steps=100)
        >>> guard.action, guard.every_n_steps
        ('skip', 100)
    """

    def __init__(self, action: str = "stop", every_n_steps: int = 50) -> None:
        super().__init__()
        if action not in ACTIONS:
            raise ValueError(f"FiniteStateGuard(action={action!r}): use one of {ACTIONS}")
        if every_n_steps < 1:
            raise ValueError(f"FiniteStateGuard(every_n_steps={every_n_steps}): must be >= 1 (e.g. 50)")
        self.action = action
        self.every_n_steps = every_n_steps
        self.skipped = 0
        self._names: dict[int, str] = {}
        self._buffers: dict[str, Tensor] = {}

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(action=self.action, every_n_steps=self.every_n_steps)

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._names = {id(p): name for name, p in pl_module.named_parameters()}

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, idx: int) -> None:
        if self.action == "skip":
            self._buffers = {name: b.detach().clone() for name, b in _float_buffers(pl_module)}

    @override
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        bad = _first_non_finite((self._names.get(id(p), "?"), p.grad) for p in params) if params else None
        where = f"gradient of {bad}" if bad else None
        if where is None:
            bad_buffer = _first_non_finite(_float_buffers(pl_module))
            where = f"buffer {bad_buffer}" if bad_buffer else None
        if where is None:
            return
        if self.action == "stop":
            raise NonFiniteStateError(self._message(trainer, where, "stopped"))
        for p in params:
            p.grad = None  # optimizers leave parameters without a gradient untouched: the step is skipped
        with torch.no_grad():
            for name, buffer in _float_buffers(pl_module):
                if name in self._buffers:
                    buffer.copy_(self._buffers[name])
        self.skipped += 1
        log.warning(self._message(trainer, where, f"step skipped ({self.skipped} so far)"))

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, idx: int
    ) -> None:
        last = bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        if last or trainer.global_step % self.every_n_steps == 0:
            self._check_state(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_state(trainer, pl_module)

    def _check_state(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bad = _first_non_finite(pl_module.named_parameters())
        where = f"weight {bad}" if bad else None
        if where is None and (buffer := _first_non_finite(_float_buffers(pl_module))):
            where = f"buffer {buffer}"
        if where is not None:
            raise NonFiniteStateError(self._message(trainer, where, "stopped before it reaches a checkpoint"))

    @staticmethod
    def _message(trainer: L.Trainer, where: str, outcome: str) -> str:
        network = where.split(" ", 1)[1].split(".", 1)[0]
        return (
            f"non-finite values (NaN/Inf) in the {where} (network {network!r}) at epoch {trainer.current_epoch}, "
            f"step {trainer.global_step}: {outcome}. Look for a diverging loss or a batch of huge values; lower the "
            "learning rate, normalize the inputs, or FiniteStateGuard(action='skip') to drop such steps"
        )


def _float_buffers(module: torch.nn.Module) -> Iterable[tuple[str, Tensor]]:
    return ((name, b) for name, b in module.named_buffers() if b.is_floating_point())


def _first_non_finite(tensors: Iterable[tuple[str, Tensor | None]]) -> str | None:
    named = [(name, t) for name, t in tensors if t is not None and t.numel()]
    if not named:
        return None
    # One host sync for the common case (every tensor finite); the offender is looked up only when one is not.
    if torch.isfinite(torch.stack([t.detach().abs().amax().float() for _, t in named])).all():
        return None
    return next((name for name, t in named if not bool(torch.isfinite(t.detach()).all())), None)


__all__ = ["FiniteStateGuard", "NonFiniteStateError"]
