"""Intermediate layers for the discriminator: the attention maps of (student layer, teacher layer) pairs.

With ``AdversarialDistillation(discriminator_layers=[(student layer, teacher layer), ...])`` the discriminator
judges, next to the pooled feature, each pair's spatial attention map (Zagoruyko & Komodakis, 2017), so it can tell
teacher from student by *where* intermediate layers respond, not only by the final feature. Attention maps need no
adapter between channel counts: the student's map is resized to the teacher's spatial size. Each map is flattened
and scaled to unit root mean square, so every layer weighs on the discriminator's first layer like the feature does.
The paper's adversarial samples apply per layer: dropout on the student's feature map before its attention map.

The teacher's maps come from the teacher-output caches when they hold them (``attention_layers=`` of
:class:`~lightning_advkd.TeacherOutputCache` and :class:`~lightning_advkd.AugmentedViewCache`), else from the live
teacher; the two give the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lightning_advkd import functional as AF
from lightning_advkd.features import FeatureTap
from lightning_advkd.teacher_cache import cached_attention


class CriticLayers:
    """Reads the layer pairs' attention maps during the forward passes, as vectors for the discriminator.

    Args:
        teacher: the frozen teacher.
        student: the student.
        pairs: ``(student layer, teacher layer)`` names whose ``(N, C, H, W)`` outputs are compared.
        input_shape: shape of one input, e.g. ``(1, 28, 28)``: a zero input runs once through both networks (eval
            mode, no autograd) to find the teacher maps' sizes and check that every layer yields a feature map.

    Raises:
        ValueError: when no pair or no input shape is given, or a layer does not yield an ``(N, C, H, W)`` map.
        FeatureTapError: when a layer name does not exist (with the closest names).

    Example:
        >>> teacher = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
        >>> student = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(8, 2))
        >>> layers = CriticLayers(teacher, student, [("0", "1")], input_shape=(1, 4, 4))
        >>> layers.width  # one 4 x 4 attention map
        16
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        pairs: Sequence[Sequence[str]],
        input_shape: Sequence[int] | None,
    ) -> None:
        if not pairs:
            raise ValueError("discriminator_layers needs at least one (student layer, teacher layer) pair")
        if input_shape is None:
            raise ValueError(
                "discriminator_layers needs input_shape=(channels, height, width) to size the discriminator"
            )
        self.pairs = [(str(s), str(t)) for s, t in pairs]
        self.student_taps = [FeatureTap(student, s, role="student", pool=False) for s, _ in self.pairs]
        self.teacher_taps = [FeatureTap(teacher, t, role="teacher", pool=False) for _, t in self.pairs]
        self.sizes = self._discover_sizes(teacher, student, torch.zeros(1, *input_shape))

    @property
    def width(self) -> int:
        """Length of the vector the layers add to what the discriminator judges."""
        return sum(height * width for height, width in self.sizes)

    @property
    def teacher_layers(self) -> list[str]:
        """The teacher layers whose attention maps a teacher-output cache must hold."""
        return [t for _, t in self.pairs]

    @contextmanager
    def capture(self, student: bool = True, teacher: bool = False) -> Iterator[None]:
        """Record the student's (and/or the teacher's) layer outputs during the forward passes inside this block."""
        with ExitStack() as stack:
            for tap in (self.student_taps if student else []) + (self.teacher_taps if teacher else []):
                stack.enter_context(tap.capture())
            yield

    def student_vectors(self, dropout: float, training: bool) -> tuple[Tensor, Tensor]:
        """The student's captured maps as ``(clean, perturbed)`` vectors; perturbed: dropout on each feature map."""
        maps = [tap.pop() for tap in self.student_taps]
        clean = torch.cat([attention_vector(m, size) for m, size in zip(maps, self.sizes, strict=True)], dim=1)
        if not training:  # dropout is the identity: the adversarial sample is the clean vector, not computed twice
            return clean, clean
        perturbed = [
            attention_vector(AF.adversarial_sample(m, dropout, training), size)
            for m, size in zip(maps, self.sizes, strict=True)
        ]
        return clean, torch.cat(perturbed, dim=1)

    def teacher_vectors(self, batch: Any) -> Tensor:
        """The teacher's maps as one vector: read from a cached batch, else from the last :meth:`capture`."""
        maps = cached_attention(batch, self.teacher_layers)
        if maps is not None:
            return torch.cat([_scaled(m.flatten(1)) for m in maps], dim=1)
        return torch.cat([_scaled(AF.attention_map(tap.pop())) for tap in self.teacher_taps], dim=1)

    def _discover_sizes(self, teacher: nn.Module, student: nn.Module, example: Tensor) -> list[tuple[int, int]]:
        was_training = student.training
        student.eval()
        try:
            with torch.no_grad(), self.capture(student=True, teacher=True):
                teacher(example)
                student(example)
            maps = [(s.pop(), t.pop()) for s, t in zip(self.student_taps, self.teacher_taps, strict=True)]
        finally:
            student.train(was_training)
        for (student_map, teacher_map), pair in zip(maps, self.pairs, strict=True):
            if student_map.dim() != 4 or teacher_map.dim() != 4:
                raise ValueError(
                    f"discriminator_layers pair {pair} yields maps of shapes {tuple(student_map.shape)} and "
                    f"{tuple(teacher_map.shape)}: the discriminator judges the attention maps of (N, C, H, W) "
                    "feature maps, so name convolutional layers"
                )
        return [(int(t.shape[-2]), int(t.shape[-1])) for _, t in maps]


def attention_vector(feature_map: Tensor, size: tuple[int, int]) -> Tensor:
    """A feature map's attention map at spatial ``size``, flattened and scaled to unit root mean square.

    Example:
        >>> vector = attention_vector(torch.rand(2, 3, 8, 8), (4, 4))
        >>> vector.shape, round(float(vector.pow(2).mean()), 4)
        (torch.Size([2, 16]), 1.0)
    """
    return _scaled(AF.attention_map(AF.resized_map(feature_map, size)))


def _scaled(attention: Tensor) -> Tensor:
    """An L2-normalised ``(N, H * W)`` attention map times ``sqrt(H * W)``: unit root mean square."""
    return attention * math.sqrt(attention.shape[1])


__all__ = ["CriticLayers", "attention_vector"]
