"""Discriminator regularizers as Lightning callbacks.

A regularizer keeps the discriminator from becoming trivially strong without shrinking or weakening the network
itself. Attach any number of them to the ``Trainer`` that fits an :class:`~lightning_advkd.AdversarialDistillation`;
with none attached, the module trains the unregularized baseline. The math lives in :mod:`lightning_advkd.functional`.

Each regularizer has a *strength*: ``weight * schedule(discriminator_step) * adaptive_multiplier``. For the additive
penalties it is the penalty's weight; for :class:`LabelSmoothing` the amount taken off the teacher label; for
:class:`InstanceNoise` the noise's standard deviation. In adaptive mode the multiplier grows by ``adaptive_factor``
after every discriminator step whose accuracy (averaged over all processes) is above ``adaptive_threshold`` and
shrinks back towards 1 otherwise, capped at ``adaptive_max``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from typing_extensions import override

from lightning_advkd import functional as AF
from lightning_advkd._logging import is_logging_step
from lightning_advkd.functional import WeightNorm

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
    """

    discriminator: nn.Module
    real: Tensor
    fake: Tensor
    perturbed_fake: Tensor
    real_logits: Tensor
    fake_logits: Tensor


class DiscriminatorRegularizer(Callback):
    """Base class of the discriminator regularizers: strength schedule, adaptive mode and checkpointed state.

    Subclasses override one or more of :meth:`transform_inputs`, :meth:`real_target` and :meth:`penalty`.

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
    requires_real_grad: bool = False

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
        return self._generate_state_key(weight=self.weight, schedule=repr(self.schedule), **self._state_key_extra())

    def _state_key_extra(self) -> dict[str, Any]:
        return {}

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
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if is_logging_step(trainer):
            pl_module.log(f"train/reg/{self.name}_strength", self.strength(), on_step=True, on_epoch=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier, "step": self.step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.multiplier = float(state_dict["multiplier"])
        self.step = int(state_dict["step"])


class AdversarialSamples(DiscriminatorRegularizer):
    """The paper's regularizer: adversarial samples (dropout on student features) shown to D labelled as teacher.

    Adds ``strength * BCE(D(f~_S), 1)`` to the discriminator loss.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[AdversarialSamples(weight=1.0)], logger=False)
    """

    name = "adversarial_samples"

    @override
    def penalty(self, inputs: DiscriminatorStepInputs) -> Tensor:
        return self.strength() * AF.adversarial_samples_penalty(inputs.discriminator(inputs.perturbed_fake))


class WeightPenalty(DiscriminatorRegularizer):
    """L1 or L2 penalty on the discriminator's weight matrices, **added** to the discriminator loss.

    Args:
        norm: ``"l1"`` (sum of absolute values) or ``"l2"`` (sum of squares).
        weight: see :class:`DiscriminatorRegularizer`; the other arguments too.
    """

    def __init__(self, norm: WeightNorm = "l2", weight: float = 1e-4, **kwargs: Any) -> None:
        if norm not in ("l1", "l2"):
            raise ValueError(f"WeightPenalty: norm must be 'l1' or 'l2', got {norm!r}")
        super().__init__(weight=weight, **kwargs)
        self.norm = norm
        self.name = f"weight_{norm}"

    @override
    def _state_key_extra(self) -> dict[str, Any]:
        return {"norm": self.norm}

    @override
    def penalty(self, inputs: DiscriminatorStepInputs) -> Tensor:
        weights = [p for p in inputs.discriminator.parameters() if p.dim() > 1]
        return self.strength() * AF.weight_penalty(weights, self.norm)


class R1Penalty(DiscriminatorRegularizer):
    """R1 gradient penalty on teacher features: ``strength * 0.5 * E ||grad_x D(x)||^2`` (Mescheder et al., 2018)."""

    name = "r1"
    requires_real_grad = True

    def __init__(self, weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(weight=weight, **kwargs)

    @override
    def penalty(self, inputs: DiscriminatorStepInputs) -> Tensor:
        return self.strength() * AF.r1_penalty(inputs.real_logits, inputs.real)


class LabelSmoothing(DiscriminatorRegularizer):
    """One-sided label smoothing: teacher features are labelled ``1 - strength`` (Salimans et al., 2016).

    Raises:
        ValueError: if ``weight`` (the amount taken off the label) is not in ``[0, 0.5)``.
    """

    name = "label_smoothing"

    def __init__(self, weight: float = 0.1, **kwargs: Any) -> None:
        if not 0.0 <= weight < 0.5:
            raise ValueError(f"LabelSmoothing: weight is the amount taken off the label, in [0, 0.5); got {weight}")
        super().__init__(weight=weight, **kwargs)

    @override
    def real_target(self) -> float:
        return 1.0 - min(self.strength(), 0.5)


class InstanceNoise(DiscriminatorRegularizer):
    """Gaussian instance noise of standard deviation ``strength`` on both discriminator inputs (Sønderby et al.).

    Pair it with a decaying schedule, e.g. ``InstanceNoise(0.1, schedule=LinearDecay(10_000))``.
    """

    name = "instance_noise"

    def __init__(self, weight: float = 0.1, **kwargs: Any) -> None:
        super().__init__(weight=weight, **kwargs)

    @override
    def transform_inputs(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        std = self.strength()
        return AF.instance_noise(real, std), AF.instance_noise(fake, std)
