"""Weight schedules of the discriminator regularizers, indexed by the discriminator's own step counter."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


class ConstantSchedule:
    """Factor ``1`` at every step.

    Example:
        >>> ConstantSchedule()(1000)
        1.0
    """

    def __call__(self, step: int) -> float:
        """The factor at ``step`` (a count of updates from 0) that multiplies the scheduled quantity."""
        return 1.0

    def __repr__(self) -> str:
        return "ConstantSchedule()"


class LinearWarmup:
    """Factor rising linearly from ``start`` to ``1`` over ``warmup_steps`` steps, then ``1``.

    Example:
        >>> LinearWarmup(warmup_steps=10)(5)
        0.5
    """

    def __init__(self, warmup_steps: int, start: float = 0.0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.start = start

    def __call__(self, step: int) -> float:
        """The factor at ``step`` (a count of updates from 0) that multiplies the scheduled quantity."""
        if step >= self.warmup_steps:
            return 1.0
        return self.start + (1.0 - self.start) * step / self.warmup_steps

    def __repr__(self) -> str:
        return f"LinearWarmup(warmup_steps={self.warmup_steps}, start={self.start})"


class StepSchedule:
    """Factor multiplied by ``gamma`` at each milestone step.

    Example:
        >>> StepSchedule(milestones=[10, 20], gamma=0.1)(15)
        0.1
    """

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        self.milestones = list(milestones)
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        """The factor at ``step`` (a count of updates from 0) that multiplies the scheduled quantity."""
        return self.gamma ** bisect.bisect_right(self.milestones, step)

    def __repr__(self) -> str:
        return f"StepSchedule(milestones={self.milestones}, gamma={self.gamma})"


class LinearDecay:
    """Factor falling linearly from ``1`` to ``end`` over ``decay_steps`` steps, then ``end`` (for instance noise).

    Example:
        >>> LinearDecay(decay_steps=10)(5)
        0.5
    """

    def __init__(self, decay_steps: int, end: float = 0.0) -> None:
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be > 0, got {decay_steps}")
        self.decay_steps = decay_steps
        self.end = end

    def __call__(self, step: int) -> float:
        """The factor at ``step`` (a count of updates from 0) that multiplies the scheduled quantity."""
        if step >= self.decay_steps:
            return self.end
        return 1.0 + (self.end - 1.0) * step / self.decay_steps

    def __repr__(self) -> str:
        return f"LinearDecay(decay_steps={self.decay_steps}, end={self.end})"
