"""Discriminator variants of AdversarialDistillation: conditional, on outputs, hinge / relativistic, spectral norm."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from tiny_networks import NUM_CLASSES, make_loader, make_networks
from torch import nn

from lightning_advkd import AdversarialDistillation, AdversarialSamples, LabelSmoothing, MLPDiscriminator, R1Penalty
from lightning_advkd import functional as AF

VARIANTS = {
    "conditional": {"conditional_discriminator": True},
    "logits": {"discriminator_input": "logits"},
    "logits_conditional": {"discriminator_input": "logits", "conditional_discriminator": True},
    "hinge_spectral_norm": {
        "gan_loss": "hinge",
        "discriminator": functools.partial(MLPDiscriminator, spectral_norm=True),
    },
    "relativistic": {"gan_loss": "relativistic"},
    "relu_adapter": {"adapter_activation": "relu"},
    "slow_discriminator": {"discriminator_optimizer": functools.partial(torch.optim.Adam, lr=1e-5)},
}


def fit(module: L.LightningModule, callbacks: list | None = None, epochs: int = 2) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks or [], log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(module, make_loader(shuffle=True), make_loader())
    return trainer


def student_state(module: AdversarialDistillation) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone() for k, v in [*module.student.state_dict().items(), *module.adapter.state_dict().items()]
    }


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_both_networks_and_reports_discriminator_health(name: str) -> None:
    torch.manual_seed(0)
    module = AdversarialDistillation(*make_networks(), **VARIANTS[name])
    d_before = [p.detach().clone() for p in module.discriminator.parameters()]
    s_before = student_state(module)
    trainer = fit(module, [R1Penalty()] if "hinge" not in name else [])
    assert module.student_step == module.discriminator_step == 8
    assert any(not torch.equal(a, b) for a, b in zip(d_before, module.discriminator.parameters(), strict=True))
    assert any(not torch.equal(s_before[k], v) for k, v in student_state(module).items())
    for key in ("val/d_acc_real", "val/d_acc_fake", "train/loss/student_adversarial"):
        assert torch.isfinite(trainer.callback_metrics[key]), key


@pytest.mark.parametrize(
    ("options", "width"),
    [
        ({}, 24),
        ({"conditional_discriminator": True}, 24 + NUM_CLASSES),
        ({"discriminator_input": "logits"}, NUM_CLASSES),
        ({"discriminator_input": "logits", "conditional_discriminator": True}, 2 * NUM_CLASSES),
    ],
)
def test_discriminator_width_follows_what_it_judges(options: dict, width: int) -> None:
    module = AdversarialDistillation(*make_networks(), **options)
    assert module.discriminator_width == width
    assert module.discriminator.in_features == width


def test_conditional_discriminator_sees_the_teachers_prediction_for_each_sample() -> None:
    module = AdversarialDistillation(*make_networks(), conditional_discriminator=True, kd_temperature=2.0)
    seen: list[torch.Tensor] = []
    module.discriminator.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    images, _ = next(iter(make_loader()))
    with torch.no_grad():
        teacher_logits = module.teacher(images)
    module.eval()
    module.validation_step((images, torch.zeros(len(images), dtype=torch.long)), 0)
    real, fake = seen[0].chunk(2)  # one pass over teacher and student; then the student loss term judges the student
    expected = torch.softmax(teacher_logits / 2.0, dim=1)
    torch.testing.assert_close(real[:, -NUM_CLASSES:], expected)
    torch.testing.assert_close(fake[:, -NUM_CLASSES:], expected)  # the student is judged against the same sample


def test_discriminator_factory_is_completed_with_the_width() -> None:
    module = AdversarialDistillation(*make_networks(), discriminator=functools.partial(MLPDiscriminator, hidden=(7,)))
    assert module.discriminator.net[0].in_features == 24 and module.discriminator.net[0].out_features == 7


def test_discriminator_of_the_wrong_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"cannot judge vectors of 28 features.*in_features=28"):
        AdversarialDistillation(*make_networks(), discriminator=MLPDiscriminator(24), conditional_discriminator=True)


@pytest.mark.parametrize(("option", "value"), [("discriminator_input", "pixels"), ("gan_loss", "wasserstein")])
def test_unknown_variant_options_are_refused(option: str, value: str) -> None:
    with pytest.raises(ValueError, match=option):
        AdversarialDistillation(*make_networks(), **{option: value})


def test_hinge_loss_with_label_smoothing_is_refused_before_training() -> None:
    module = AdversarialDistillation(*make_networks(), gan_loss="hinge")
    with pytest.raises(ValueError, match=r"LabelSmoothing.*hinge"):
        fit(module, [LabelSmoothing(0.1)])
    assert module.student_step == 0


def test_spectral_norm_bounds_every_layer() -> None:
    torch.manual_seed(0)
    d = MLPDiscriminator(16, spectral_norm=True)
    d(torch.randn(32, 16))
    for _ in range(50):  # power iterations run in training mode
        d(torch.randn(32, 16))
    for layer in (m for m in d.modules() if isinstance(m, nn.Linear)):
        assert float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_discriminator_off_twin_is_the_same_run_whatever_the_discriminator(name: str) -> None:
    """With adversarial weight 0 no discriminator option reaches the student: twins of such variants coincide.

    The student here has dropout, so this also checks that the discriminator's construction never shifts the
    student's random stream.
    """
    results = []
    for options in ({}, VARIANTS[name]):
        L.seed_everything(0, verbose=False)
        module = AdversarialDistillation(*make_networks(), adversarial_weight=0.0, **options)
        fit(module, [AdversarialSamples()])
        results.append({k: v.detach().clone() for k, v in module.student.state_dict().items()})
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


def test_relativistic_losses_match_hand_computation() -> None:
    real, fake = torch.tensor([[2.0], [0.0]]), torch.tensor([[-1.0], [1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_d = bce(real - fake.mean(), torch.ones_like(real)) + bce(fake - real.mean(), torch.zeros_like(fake))
    expected_g = bce(fake - real.mean(), torch.ones_like(fake)) + bce(real - fake.mean(), torch.zeros_like(real))
    torch.testing.assert_close(AF.discriminator_loss(real, fake, kind="relativistic"), expected_d)
    torch.testing.assert_close(AF.generator_loss(fake, real, kind="relativistic"), expected_g)
    with pytest.raises(ValueError, match="needs the discriminator's logits"):
        AF.generator_loss(fake, kind="relativistic")


def test_hinge_losses_match_hand_computation() -> None:
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-3.0], [1.0]])
    # D: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + 0.5) / 2 + (0 + 2) / 2
    assert AF.discriminator_loss(real, fake, kind="hinge").item() == pytest.approx(1.25)
    assert AF.generator_loss(fake, kind="hinge").item() == pytest.approx(1.0)


def test_relu_adapter_keeps_adapted_features_in_the_teachers_non_negative_range() -> None:
    module = AdversarialDistillation(*make_networks(), adapter_activation="relu")
    images, _ = next(iter(make_loader()))
    teacher_features, student_features = module.features(images)
    assert bool((teacher_features >= 0).all()) and bool((student_features >= 0).all())
    signed = AdversarialDistillation(*make_networks())
    assert bool((signed.features(images)[1] < 0).any())  # the default linear adapter's sign gives the student away
    fit(module)
    assert module.student_step == module.discriminator_step == 8


def test_unknown_adapter_activation_is_refused() -> None:
    with pytest.raises(ValueError, match="adapter activation must be 'none' or 'relu'"):
        AdversarialDistillation(*make_networks(), adapter_activation="tanh")
