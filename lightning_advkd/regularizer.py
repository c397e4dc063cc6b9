"""The contract between :class:`~lightning_advkd.AdversarialDistillation` and its discriminator regularizers.

The module owns the discriminator update; a regularizer, a Lightning ``Callback`` attached to the ``Trainer``, may
change the inputs the discriminator sees (:meth:`DiscriminatorRegularizer.transform_inputs`), the teacher label
(:meth:`~DiscriminatorRegularizer.real_target`) or add a loss term (:meth:`~DiscriminatorRegularizer.penalty`). After
each discriminator update the module calls :meth:`~DiscriminatorRegularizer.on_discriminator_step`. The concrete
regularizers live in :mod:`lightning_advkd.callbacks`; this module never imports them.

Each regularizer has a *strength*: ``weight * schedule(discriminator_step) * multiplier``. For the additive penalties
it is the penalty's weight; for label smoothing the amount taken off the teacher label; for instance noise the noise's
standard deviation. In adaptive mode the multiplier grows by ``adaptive_factor`` after every discriminator step whose
accuracy (averaged over all processes) is above ``adaptive_threshold`` and shrinks back towards 1 otherwise, capped at
``adaptive_max``. :class:`~lightning_advkd.CollapseGuard` strengthens regularizers through :meth:`strengthen`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from typing_extensions import override

from lightning_advkd._logging import is_logging_step

Schedule = Callable[[int], float]


@dataclass
class DiscriminatorStepInputs:
    """What a regularizer sees of one discriminator update.

    Attributes:
        discriminator: the discriminator being trained.
        real: teacher features as shown to the discriminator.
        fake: adapted student features, detached, as shown to the discriminator.
        perturbed_fake: adapted adversarial samples (dropout on student features), detached.
        real_logits: discriminator output on ``real``.
        fake_logits: discriminator output on ``fake``.
        perturbed_fake_logits: discriminator output on ``perturbed_fake``, from the same forward pass as the other
            two; ``None`` unless a regularizer sets ``requires_perturbed_fake`` (``fake_logits`` when the adversarial
            samples are the fake inputs themselves).
    """

    discriminator: nn.Module
    real: Tensor
    fake: Tensor
    perturbed_fake: Tensor
    real_logits: Tensor
    fake_logits: Tensor
    perturbed_fake_logits: Tensor | None


class DiscriminatorRegularizer(Callback):
    """Base class of the discriminator regularizers: strength schedule, adaptive mode and checkpointed state.

    Subclasses override one or more of :meth:`transform_inputs`, :meth:`real_target` and :meth:`penalty`, and set
    ``requires_real_grad`` (a penalty on the gradient at the teacher inputs) or ``requires_perturbed_fake`` (a penalty
    on the discriminator's output for the adversarial samples) when their penalty needs it.

    Args:
        weight: base strength.
        schedule: a callable ``discriminator_step -> factor`` (see :mod:`lightning_advkd.schedules`); constant if
            ``None``.
        adaptive_threshold: discriminator accuracy above which the strength grows; ``None`` disables adaptive mode.
        adaptive_factor: multiplicative change of the adaptive multiplier per discriminator step.
        adaptive_max: upper bound of the adaptive multiplier.

    Raises:
        ValueError: on a negative weight, a threshold outside ``(0.5, 1)``, a factor not above 1, or a max below 1.
    """

    name: str = "regularizer"
    requires_real_grad: bool = False  # the teacher inputs require grad (gradient penalties)
    requires_perturbed_fake: bool = False  # the discriminator judges the adversarial samples too

    def __init__(
        self,
        weight: float = 1.0,
        schedule: Schedule | None = None,
        adaptive_threshold: float | None = None,
        adaptive_factor: float = 1.05,
        adaptive_max: float = 100.0,
    ) -> None:
        if weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}")
        if adaptive_threshold is not None and not 0.5 < adaptive_threshold < 1.0:
            raise ValueError(
                f"{type(self).__name__}: adaptive_threshold is a discriminator accuracy in (0.5, 1), got "
                f"{adaptive_threshold}; use e.g. 0.8, or None to disable adaptive mode"
            )
        if adaptive_factor <= 1.0:
            raise ValueError(f"{type(self).__name__}: adaptive_factor must be > 1, got {adaptive_factor}")
        if adaptive_max < 1.0:
            raise ValueError(f"{type(self).__name__}: adaptive_max must be >= 1, got {adaptive_max}")
        self.weight = weight
        self.schedule = schedule
        self.adaptive_threshold = adaptive_threshold
        self.adaptive_factor = adaptive_factor
        self.adaptive_max = adaptive_max
        self.multiplier = 1.0
        self.step = 0

    @property
    @override
    def state_key(self) -> str:
        """Names this regularizer's saved state: stable across processes, so resuming finds it (lambdas included)."""
        return self._generate_state_key(
            weight=self.weight, schedule=schedule_name(self.schedule), **self._state_key_extra()
        )

    def _state_key_extra(self) -> dict[str, Any]:
        return {}

    def strengthen(self, factor: float) -> None:
        """Multiply the strength by ``factor`` from now on (what :class:`~lightning_advkd.CollapseGuard` does)."""
        self.multiplier *= factor

    def strength(self) -> float:
        """Current strength: weight x schedule factor x adaptive multiplier."""
        factor = self.schedule(self.step) if self.schedule is not None else 1.0
        return self.weight * factor * self.multiplier

    def transform_inputs(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """Change the features shown to the discriminator (identity by default)."""
        return real, fake

    def real_target(self) -> float:
        """Target label of teacher features (1 by default)."""
        return 1.0

    def penalty(self, inputs: DiscriminatorStepInputs) -> Tensor | None:
        """A weighted term added to the discriminator loss, or ``None``."""
        return None

    def on_discriminator_step(self, trainer: L.Trainer, step: int, discriminator_accuracy: Tensor) -> None:
        """Called by the module after each D update with its discriminator-step counter and D's batch accuracy.

        Moves the schedule to ``step`` and, in adaptive mode, updates the multiplier from the accuracy averaged over
        all processes (so every replica applies the same strength).
        """
        self.step = step
        if self.adaptive_threshold is None:
            return
        accuracy = float(trainer.strategy.reduce(discriminator_accuracy.detach(), reduce_op="mean"))
        if accuracy > self.adaptive_threshold:
            self.multiplier = min(self.multiplier * self.adaptive_factor, self.adaptive_max)
        else:
            self.multiplier = max(self.multiplier / self.adaptive_factor, 1.0)

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(getattr(pl_module, "discriminator", None), nn.Module):
            raise TypeError(
                f"{type(self).__name__} regularizes a discriminator, but {type(pl_module).__name__} has none: attach "
                "discriminator regularizers only to an AdversarialDistillation with adversarial training, or remove "
                "the callback"
            )

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if is_logging_step(trainer, getattr(pl_module, "batches_trained", batch_idx)):
            pl_module.log(f"train/reg/{self.name}_strength", self.strength(), on_step=True, on_epoch=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier, "step": self.step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.multiplier = float(state_dict["multiplier"])
        self.step = int(state_dict["step"])


def schedule_name(schedule: Schedule | None) -> str:
    """A name for a schedule that is the same in every process: its repr, unless that holds a memory address.

    Example:
        >>> schedule_name(None), schedule_name(lambda step: 1.0)
        ('constant', '<lambda>')
    """
    if schedule is None:
        return "constant"
    text = repr(schedule)
    if " at 0x" not in text:
        return text
    return getattr(schedule, "__qualname__", type(schedule).__qualname__)
