"""The student objective every module of the package trains with: one set of terms, one set of argument names.

A weighted sum of label-free transfer terms (Hinton KD, L2 and L1 between logits, a FitNets-style hint, attention
transfer) and, for the with-labels variants and the supervised baseline, cross-entropy on labels. A weight of 0
switches a term off; the terms are computed and summed in one fixed order, so two modules asking for the same terms
get the same loss, bit for bit. :class:`~lightning_advkd.AdversarialDistillation` adds its adversarial term in front.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_advkd import functional as AF

#: The terms in the order they are summed; each is switched on by ``<name>_weight > 0``.
TERMS = ("kd", "logit_l2", "logit_l1", "hint", "attention", "label")
LOGIT_TERMS = ("kd", "logit_l2", "logit_l1")


@dataclass(frozen=True)
class StudentObjective:
    """The weighted transfer and label terms of the student loss.

    Args:
        kd_weight: weight of Hinton KD, ``T^2 * KL(softmax(z_T/T) || softmax(z_S/T))`` at ``kd_temperature``.
        kd_temperature: softmax temperature of the KD term (and of everything else the package softens).
        logit_l2_weight: weight of the mean squared error between student and teacher logits.
        logit_l1_weight: weight of the mean absolute error between student and teacher logits.
        hint_weight: weight of a FitNets-style hint, the mean squared error between the (adapted) student feature
            and the teacher feature.
        attention_weight: weight of attention transfer, summed over the modules' attention pairs.
        label_weight: weight of cross-entropy on labels (0: label-free).
        label_smoothing: label smoothing of that cross-entropy, in [0, 1).

    Raises:
        ValueError: on a negative weight, a non-positive temperature or a label smoothing outside [0, 1).

    Example:
        >>> objective = StudentObjective(kd_weight=1.0, logit_l2_weight=0.5)
        >>> objective.weights
        {'kd': 1.0, 'logit_l2': 0.5}
        >>> terms = objective.terms(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
        >>> {name: round(float(value), 4) for name, value in terms.items()}
        {'kd': 0.1247, 'logit_l2': 0.25}
    """

    kd_weight: float = 1.0
    kd_temperature: float = 4.0
    logit_l2_weight: float = 0.0
    logit_l1_weight: float = 0.0
    hint_weight: float = 0.0
    attention_weight: float = 0.0
    label_weight: float = 0.0
    label_smoothing: float = 0.0
    weights: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        all_weights = {name: float(getattr(self, f"{name}_weight")) for name in TERMS}
        negative = {f"{name}_weight": w for name, w in all_weights.items() if w < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0 (0 switches a term off), got {negative}")
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        object.__setattr__(self, "weights", {name: w for name, w in all_weights.items() if w > 0})

    @property
    def compares_logits(self) -> bool:
        """Whether a term compares student and teacher logits (then their class counts must agree)."""
        return any(name in self.weights for name in LOGIT_TERMS)

    @property
    def needs_labels(self) -> bool:
        """Whether the label term is on."""
        return "label" in self.weights

    def terms(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        *,
        student_features: Tensor | None = None,
        teacher_features: Tensor | None = None,
        attention: Sequence[Tensor] = (),
        labels: Tensor | None = None,
        labels_required: bool = True,
    ) -> dict[str, Tensor]:
        """The weighted terms that are switched on, in :data:`TERMS` order.

        Args:
            student_logits: ``z_S``, ``(N, K)``.
            teacher_logits: ``z_T``, ``(N, K)``; needed by the logit terms.
            student_features: the student feature the hint compares (already through the adapter).
            teacher_features: the teacher feature the hint compares.
            attention: one attention-transfer distance per layer pair.
            labels: class indices; needed by the label term.
            labels_required: when ``False``, the label term is left out of a batch without labels (evaluation on
                label-free data) instead of failing.

        Raises:
            ValueError: when the label term is on, ``labels`` is ``None`` and ``labels_required``.
        """
        w = self.weights
        terms: dict[str, Tensor] = {}
        if "kd" in w:
            terms["kd"] = w["kd"] * AF.kd_loss(student_logits, _given(teacher_logits), self.kd_temperature)
        if "logit_l2" in w:
            terms["logit_l2"] = w["logit_l2"] * F.mse_loss(student_logits, _given(teacher_logits))
        if "logit_l1" in w:
            terms["logit_l1"] = w["logit_l1"] * F.l1_loss(student_logits, _given(teacher_logits))
        if "hint" in w:
            terms["hint"] = w["hint"] * AF.hint_loss(_given(student_features), _given(teacher_features))
        if "attention" in w:
            terms["attention"] = w["attention"] * torch.stack(list(attention)).sum()
        if "label" in w and (labels is not None or labels_required):
            if labels is None:
                raise ValueError(
                    "label_weight > 0 but the training batch has no labels: give (inputs, labels) batches (or a dict "
                    "with the label_key), or set label_weight=0 for label-free training"
                )
            cross_entropy = F.cross_entropy(student_logits, labels, label_smoothing=self.label_smoothing)
            terms["label"] = w["label"] * cross_entropy
        return terms


def total(terms: dict[str, Tensor]) -> Tensor:
    """The sum of the terms, in their order (the one summation every module uses)."""
    return torch.stack(list(terms.values())).sum()


def _given(value: Tensor | None) -> Tensor:
    if value is None:
        raise ValueError("a term of the student objective is on but its input was not computed")
    return value


def renamed(old: str, new: str, value: Any, owner: str) -> Any:
    """Warn that ``owner``'s argument ``old`` is deprecated in favour of ``new``; returns ``value``."""
    warnings.warn(
        f"{owner}({old}=...) is deprecated and will be removed in a future release: use {new}=... instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return value


def weights_from_data_term(data_term: str, data_weight: float) -> dict[str, float]:
    """The objective weights that AdversarialDistillation's deprecated ``data_term``/``data_weight`` stood for.

    Example:
        >>> weights_from_data_term("l2", 2.0)
        {'kd_weight': 0.0, 'logit_l2_weight': 2.0, 'logit_l1_weight': 0.0}
    """
    kinds = {"kl": "kd_weight", "l2": "logit_l2_weight", "l1": "logit_l1_weight", "none": None}
    if data_term not in kinds:
        raise ValueError(f"data_term must be one of 'l2', 'l1', 'kl', 'none'; got {data_term!r}")
    weights = {"kd_weight": 0.0, "logit_l2_weight": 0.0, "logit_l1_weight": 0.0}
    key = kinds[data_term]
    if key is not None:
        weights[key] = data_weight
    return weights


__all__ = ["LOGIT_TERMS", "TERMS", "StudentObjective", "renamed", "total", "weights_from_data_term"]
