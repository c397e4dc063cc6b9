"""Discriminator regularizers as Lightning callbacks.

A regularizer keeps the discriminator from becoming trivially strong without shrinking or weakening the network
itself. Attach any number of them to the ``Trainer`` that fits an :class:`~lightning_advkd.AdversarialDistillation`;
with none attached, the module trains the unregularized baseline. The contract they implement (strength, schedule,
adaptive mode, checkpointed state) is :class:`~lightning_advkd.regularizer.DiscriminatorRegularizer`; the math lives
in :mod:`lightning_advkd.functional`.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor
from typing_extensions import override

from lightning_advkd import functional as AF
from lightning_advkd.functional import WeightNorm
from lightning_advkd.regularizer import DiscriminatorRegularizer, DiscriminatorStepInputs, Schedule

__all__ = [
    "AdversarialSamples",
    "DiscriminatorRegularizer",
    "DiscriminatorStepInputs",
    "InstanceNoise",
    "LabelSmoothing",
    "R1Penalty",
    "Schedule",
    "WeightPenalty",
]


class AdversarialSamples(DiscriminatorRegularizer):
    """The paper's regularizer: adversarial samples (dropout on student features) shown to D labelled as teacher.

    Adds ``strength * BCE(D(f~_S), 1)`` to the discriminator loss.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[AdversarialSamples(weight=1.0)], logger=False)
    """

    name = "adversarial_samples"
    requires_perturbed_fake = True

    @override
    def penalty(self, inputs: DiscriminatorStepInputs) -> Tensor:
        return self.strength() * AF.adversarial_samples_penalty(cast(Tensor, inputs.perturbed_fake_logits))


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
