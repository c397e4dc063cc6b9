"""CollapseGuard: a saturated discriminator or falling agreement is acted on, never trained through silently."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import build, fit
from tiny_networks import make_loader

from lightning_advkd import AdversarialSamples, CollapseGuard


def overpowering_discriminator(**kwargs):
    """A discriminator with a huge learning rate and a frozen student: it saturates within a few steps."""
    return build(
        discriminator_optimizer=functools.partial(torch.optim.Adam, lr=1e-2),
        student_optimizer=functools.partial(torch.optim.SGD, lr=0.0),
        **kwargs,
    )


def test_stop_on_a_saturated_discriminator():
    module = overpowering_discriminator()
    guard = CollapseGuard(action="stop", saturation_threshold=0.9, patience_steps=3, ema=1.0, monitor=None)
    fit(module, make_loader(n=512, batch_size=16), max_epochs=5, callbacks=[guard], limit_val_batches=0)
    assert guard.reason is not None and "saturated" in guard.reason
    assert module.student_step < 5 * 32  # stopped early


def test_strengthen_multiplies_the_regularizers():
    module = overpowering_discriminator()
    regularizer = AdversarialSamples()
    guard = CollapseGuard(action="strengthen", saturation_threshold=0.9, patience_steps=3, ema=1.0, monitor=None)
    with pytest.warns(UserWarning, match="regularizer strength x2.0"):
        fit(module, make_loader(n=256, batch_size=16), callbacks=[guard, regularizer], limit_val_batches=0)
    assert regularizer.multiplier >= 2.0
    assert module.student_step == 16  # strengthen does not stop


def test_no_action_while_healthy():
    module = build()
    guard = CollapseGuard(action="stop", saturation_threshold=0.999, patience_steps=50, ema=0.5)
    fit(module, make_loader(), make_loader(), max_epochs=2, callbacks=[guard])
    assert guard.reason is None
    assert module.student_step == 8


class FakeTrainer:
    def __init__(self, agreement: float) -> None:
        self.sanity_checking = False
        self.callback_metrics = {"val/agreement": torch.tensor(agreement)}
        self.should_stop = False
        self.callbacks = []


def test_falling_agreement_stops_after_patience():
    guard = CollapseGuard(action="stop", max_drop=0.05, patience_epochs=2)
    for agreement, should_stop in [(0.80, False), (0.90, False), (0.86, False), (0.84, False), (0.79, True)]:
        trainer = FakeTrainer(agreement)
        guard.on_validation_end(trainer, None)
        assert trainer.should_stop is should_stop, agreement
    assert "val/agreement fell to 0.7900" in guard.reason


def test_state_round_trip_and_bad_arguments():
    guard = CollapseGuard()
    guard.accuracy_ema, guard.best_agreement, guard.low_epochs = 0.97, 0.9, 1
    other = CollapseGuard()
    other.load_state_dict(guard.state_dict())
    assert (other.accuracy_ema, other.best_agreement, other.low_epochs) == (0.97, 0.9, 1)
    with pytest.raises(ValueError, match="action"):
        CollapseGuard(action="panic")
    with pytest.raises(ValueError, match="saturation_threshold"):
        CollapseGuard(saturation_threshold=0.3)
