"""What the discriminator of :class:`~lightning_advkd.AdversarialDistillation` judges of one network's outputs."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_advkd import functional as AF
from lightning_advkd.critic_layers import CriticLayers

DiscriminatorInput = Literal["features", "logits"]


class CriticInput:
    """Builds the vector the discriminator judges: the feature or the softened logits, the layers, the conditioning.

    In this order: the pooled feature (``kind="features"``) or the class probabilities at ``temperature``
    (``kind="logits"``); then the attention vectors of :class:`~lightning_advkd.critic_layers.CriticLayers`, if any;
    then, for a conditional discriminator, the teacher's soft prediction for the same sample.

    Args:
        kind: ``"features"`` or ``"logits"``.
        conditional: append the teacher's soft prediction (:func:`lightning_advkd.functional.conditioned`).
        temperature: softmax temperature of the logits and of the conditioning.
        feature_width: width of the (teacher's, and adapted student's) pooled feature.
        num_classes: class count.
        layers: the intermediate layers the discriminator judges too, or ``None``.

    Raises:
        ValueError: when ``kind`` is neither ``"features"`` nor ``"logits"``.

    Example:
        >>> critic = CriticInput("features", conditional=True, temperature=1.0, feature_width=3, num_classes=2)
        >>> critic.width
        5
        >>> critic(torch.ones(1, 3), torch.zeros(1, 2), torch.zeros(1, 2))
        tensor([[1.0000, 1.0000, 1.0000, 0.5000, 0.5000]])
    """

    def __init__(
        self,
        kind: DiscriminatorInput,
        conditional: bool,
        temperature: float,
        feature_width: int,
        num_classes: int,
        layers: CriticLayers | None = None,
    ) -> None:
        if kind not in ("features", "logits"):
            raise ValueError(f"discriminator_input must be 'features' or 'logits', got {kind!r}")
        self.kind, self.conditional, self.temperature = kind, conditional, temperature
        self.layers = layers
        width = feature_width if kind == "features" else num_classes
        width += layers.width if layers is not None else 0
        self.width = width + (num_classes if conditional else 0)

    def __call__(
        self, features: Tensor, logits: Tensor, teacher_logits: Tensor, layers: Tensor | None = None
    ) -> Tensor:
        """The judged vectors, ``(N, width)``, of one network's feature, logits and layer vectors."""
        judged = self.judged(features, logits)
        if layers is not None:
            judged = torch.cat([judged, layers], dim=1)
        return AF.conditioned(judged, teacher_logits, self.temperature) if self.conditional else judged

    def judged(self, features: Tensor, logits: Tensor) -> Tensor:
        """The first part alone: the feature, or the class probabilities at ``temperature``."""
        return features if self.kind == "features" else F.softmax(logits / self.temperature, dim=1)


__all__ = ["CriticInput", "DiscriminatorInput"]
