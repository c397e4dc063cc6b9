"""Tests of ``lightning_advkd.schedules``: factor values at given steps and argument validation."""

from __future__ import annotations

import pytest

from lightning_advkd.schedules import ConstantSchedule, LinearDecay, LinearWarmup, StepSchedule


@pytest.mark.parametrize("step", [0, 1, 17, 10**9])
def test_constant_schedule(step: int) -> None:
    assert ConstantSchedule()(step) == 1.0


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.0), (1, 0.1), (5, 0.5), (9, 0.9), (10, 1.0), (11, 1.0), (500, 1.0)]
)
def test_linear_warmup_from_zero(step: int, expected: float) -> None:
    assert LinearWarmup(warmup_steps=10)(step) == pytest.approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.2), (2, 0.36), (5, 0.6), (10, 1.0), (20, 1.0)])
def test_linear_warmup_from_start(step: int, expected: float) -> None:
    # 0.2 + 0.8 * step / 10
    assert LinearWarmup(warmup_steps=10, start=0.2)(step) == pytest.approx(expected)


def test_linear_warmup_without_warmup_is_one_from_step_zero() -> None:
    schedule = LinearWarmup(warmup_steps=0, start=0.3)
    assert schedule(0) == 1.0
    assert schedule(7) == 1.0


def test_linear_warmup_rejects_negative_steps() -> None:
    with pytest.raises(ValueError, match="warmup_steps must be >= 0, got -1"):
        LinearWarmup(warmup_steps=-1)


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 1.0), (9, 1.0), (10, 0.1), (19, 0.1), (20, 0.01), (21, 0.01), (1000, 0.01)]
)
def test_step_schedule(step: int, expected: float) -> None:
    assert StepSchedule(milestones=[10, 20], gamma=0.1)(step) == pytest.approx(expected)


def test_step_schedule_default_gamma_and_no_milestones() -> None:
    assert StepSchedule(milestones=[3])(3) == pytest.approx(0.1)
    assert StepSchedule(milestones=[])(10**6) == 1.0


def test_step_schedule_accepts_a_tuple() -> None:
    schedule = StepSchedule(milestones=(2, 4), gamma=0.5)
    assert [schedule(s) for s in range(6)] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_step_schedule_rejects_unsorted_milestones() -> None:
    with pytest.raises(ValueError, match=r"milestones must be increasing, got \[20, 10\]"):
        StepSchedule(milestones=[20, 10])


@pytest.mark.parametrize(("step", "expected"), [(0, 1.0), (1, 0.9), (5, 0.5), (10, 0.0), (50, 0.0)])
def test_linear_decay_to_zero(step: int, expected: float) -> None:
    assert LinearDecay(decay_steps=10)(step) == pytest.approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(0, 1.0), (5, 0.6), (8, 0.36), (10, 0.2), (50, 0.2)])
def test_linear_decay_to_end(step: int, expected: float) -> None:
    # 1 + (0.2 - 1) * step / 10
    assert LinearDecay(decay_steps=10, end=0.2)(step) == pytest.approx(expected)


@pytest.mark.parametrize("decay_steps", [0, -5])
def test_linear_decay_rejects_non_positive_steps(decay_steps: int) -> None:
    with pytest.raises(ValueError, match=f"decay_steps must be > 0, got {decay_steps}"):
        LinearDecay(decay_steps=decay_steps)


def test_schedules_are_monotonic() -> None:
    warmup = [LinearWarmup(100, start=0.1)(s) for s in range(150)]
    decay = [LinearDecay(100, end=0.1)(s) for s in range(150)]
    assert warmup == sorted(warmup)
    assert decay == sorted(decay, reverse=True)


def test_reprs() -> None:
    assert repr(ConstantSchedule()) == "ConstantSchedule()"
    assert repr(LinearWarmup(5, start=0.5)) == "LinearWarmup(warmup_steps=5, start=0.5)"
    assert repr(StepSchedule([1, 2], gamma=0.5)) == "StepSchedule(milestones=[1, 2], gamma=0.5)"
    assert repr(LinearDecay(7, end=0.1)) == "LinearDecay(decay_steps=7, end=0.1)"
