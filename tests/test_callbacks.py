"""Discriminator regularizer callbacks: their terms in the discriminator loss, schedules, adaptive mode, together."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from helpers import build, fit
from tiny_networks import make_loader, make_networks

from lightning_advkd import (
    AdversarialSamples,
    DiscriminatorStepInputs,
    InstanceNoise,
    LabelSmoothing,
    LinearWarmup,
    R1Penalty,
    WeightPenalty,
)
from lightning_advkd import functional as AF


def step_inputs(module, seed: int = 0) -> DiscriminatorStepInputs:
    generator = torch.Generator().manual_seed(seed)
    real = torch.randn(6, 24, generator=generator).requires_grad_(True)
    fake = torch.randn(6, 24, generator=generator)
    perturbed = torch.randn(6, 24, generator=generator)
    d = module.discriminator
    return DiscriminatorStepInputs(d, real, fake, perturbed, d(real), d(fake), d(perturbed))


def terms_with(*regularizers):
    module = build()
    module._regularizers = list(regularizers)
    inputs = step_inputs(module)
    return module._discriminator_loss_terms(inputs), inputs


def test_no_regularizer_is_the_plain_gan_loss():
    terms, inputs = terms_with()
    assert list(terms) == ["gan"]
    torch.testing.assert_close(terms["gan"], AF.discriminator_loss(inputs.real_logits, inputs.fake_logits))


def test_adversarial_samples_term_is_the_papers_regularizer():
    terms, inputs = terms_with(AdversarialSamples(weight=0.5))
    expected = 0.5 * AF.adversarial_samples_penalty(inputs.discriminator(inputs.perturbed_fake))
    torch.testing.assert_close(terms["reg_adversarial_samples"], expected)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_weight_penalty_is_added_not_subtracted(norm):
    terms, inputs = terms_with(WeightPenalty(norm, weight=1e-3))
    matrices = [p for p in inputs.discriminator.parameters() if p.dim() == 2]
    by_hand = sum((p.abs().sum() if norm == "l1" else (p * p).sum()).item() for p in matrices)
    assert terms[f"reg_weight_{norm}"].item() == pytest.approx(1e-3 * by_hand, rel=1e-5)
    assert terms[f"reg_weight_{norm}"].item() > 0


def test_r1_penalty_matches_the_gradient_of_d_on_teacher_features():
    terms, inputs = terms_with(R1Penalty(weight=2.0))
    (grad,) = torch.autograd.grad(inputs.discriminator(inputs.real).sum(), inputs.real)
    expected = 2.0 * 0.5 * grad.pow(2).sum(dim=1).mean()
    torch.testing.assert_close(terms["reg_r1"], expected)


def test_label_smoothing_lowers_the_teacher_target():
    terms, inputs = terms_with(LabelSmoothing(weight=0.2))
    expected = AF.discriminator_loss(inputs.real_logits, inputs.fake_logits, real_target=0.8)
    torch.testing.assert_close(terms["gan"], expected)
    assert list(terms) == ["gan"]


def test_instance_noise_has_the_scheduled_standard_deviation():
    noise = InstanceNoise(weight=0.5)
    real = torch.zeros(20000, 4)
    noisy_real, noisy_fake = noise.transform_inputs(real, real)
    assert noisy_real.std().item() == pytest.approx(0.5, rel=0.03)
    assert not torch.equal(noisy_real, noisy_fake)
    noise.weight = 0.0
    assert noise.transform_inputs(real, real)[0] is real


def test_schedule_scales_the_strength():
    reg = AdversarialSamples(weight=2.0, schedule=LinearWarmup(warmup_steps=10))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
    assert reg.strength() == 0.0
    reg.on_discriminator_step(trainer, 5, torch.tensor(0.5))
    assert reg.strength() == pytest.approx(1.0)
    reg.on_discriminator_step(trainer, 50, torch.tensor(0.5))
    assert reg.strength() == pytest.approx(2.0)


def test_adaptive_mode_strengthens_while_the_discriminator_is_too_accurate():
    reg = WeightPenalty("l2", weight=1.0, adaptive_threshold=0.8, adaptive_factor=2.0, adaptive_max=8.0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
    for step in range(1, 6):
        reg.on_discriminator_step(trainer, step, torch.tensor(0.95))
    assert reg.multiplier == 8.0  # 2, 4, 8, capped
    reg.on_discriminator_step(trainer, 6, torch.tensor(0.6))
    assert reg.multiplier == 4.0
    for step in range(7, 12):
        reg.on_discriminator_step(trainer, step, torch.tensor(0.6))
    assert reg.multiplier == 1.0
    assert reg.strength() == 1.0


def test_every_regularizer_together_in_training():
    module = build()
    callbacks = [
        AdversarialSamples(),
        WeightPenalty("l1", weight=1e-5),
        WeightPenalty("l2", weight=1e-4),
        R1Penalty(weight=1.0),
        LabelSmoothing(weight=0.1),
        InstanceNoise(weight=0.05),
    ]
    trainer = fit(module, make_loader(), callbacks=callbacks)
    metrics = trainer.callback_metrics
    for name in ("adversarial_samples", "weight_l1", "weight_l2", "r1"):
        assert math.isfinite(metrics[f"train/loss/discriminator_reg_{name}"].item())
    assert metrics["train/reg/label_smoothing_strength"].item() == pytest.approx(0.1)
    assert all(c.step == module.discriminator_step == 4 for c in callbacks)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: AdversarialSamples(weight=-1), "weight must be >= 0"),
        (lambda: AdversarialSamples(adaptive_threshold=0.3), "adaptive_threshold"),
        (lambda: AdversarialSamples(adaptive_threshold=0.8, adaptive_factor=1.0), "adaptive_factor"),
        (lambda: WeightPenalty("l3"), "norm must be 'l1' or 'l2'"),
        (lambda: LabelSmoothing(weight=0.7), r"\[0, 0.5\)"),
    ],
)
def test_bad_arguments_name_the_fix(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_a_regularizer_on_a_module_without_discriminator_is_an_error_before_training():
    from lightning_advkd.distillation import KnowledgeDistillation

    module = KnowledgeDistillation(*make_networks())
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[R1Penalty()]
    )
    with pytest.raises(TypeError, match="R1Penalty regularizes a discriminator, but KnowledgeDistillation has none"):
        trainer.fit(module, make_loader())
    assert trainer.global_step == 0


@pytest.mark.parametrize(("callbacks", "rows_per_update"), [([], 2), ([R1Penalty()], 2), ([AdversarialSamples()], 3)])
def test_the_discriminator_judges_adversarial_samples_only_for_a_regularizer_that_reads_them(
    callbacks, rows_per_update
):
    module = build()
    batch_sizes: list[int] = []
    module.discriminator.register_forward_hook(lambda m, args, out: batch_sizes.append(len(args[0])))
    loader = make_loader()
    fit(module, loader, callbacks=callbacks, limit_val_batches=0)
    per_step = len(batch_sizes) // module.discriminator_step  # one pass for the update, one for the student's term
    assert per_step == 2
    batch = loader.batch_size
    assert batch_sizes[0::2] == [batch] * module.discriminator_step  # the student's adversarial term
    assert batch_sizes[1::2] == [rows_per_update * batch] * module.discriminator_step  # one pass, stacked
