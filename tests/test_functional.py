"""Tests of ``lightning_advkd.functional`` against values computed by hand, not by the torch losses under test."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_advkd.functional import (
    adversarial_sample,
    adversarial_samples_penalty,
    attention_map,
    attention_transfer_loss,
    discriminator_loss,
    generator_loss,
    hint_loss,
    instance_noise,
    kd_loss,
    logit_matching_loss,
    r1_penalty,
    weight_penalty,
)

LOG2 = 0.6931471805599453  # math.log(2)


def softplus(x: float) -> float:
    """``log(1 + e^x)``: BCE with logits is ``softplus(-x)`` for target 1 and ``softplus(x)`` for target 0."""
    return math.log(1.0 + math.exp(x))


def softmax(z: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in z]
    total = sum(exps)
    return [e / total for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    """``KL(p || q) = sum_i p_i log(p_i / q_i)``."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


# --- adversarial (BCE) losses -----------------------------------------------------------------------------------------


def test_generator_loss_hand_computed() -> None:
    # BCE(x, 1) = log(1 + e^-x): (log(1 + e^-2) + log(1 + e^1)) / 2 = (0.126928 + 1.313262) / 2
    expected = 0.7200948492805976
    assert expected == pytest.approx((softplus(-2.0) + softplus(1.0)) / 2)
    assert generator_loss(torch.tensor([[2.0], [-1.0]])).item() == pytest.approx(expected, abs=1e-6)


def test_generator_loss_at_zero_logit_is_log2() -> None:
    assert generator_loss(torch.zeros(5, 1)).item() == pytest.approx(LOG2, abs=1e-6)


def test_adversarial_samples_penalty_hand_computed() -> None:
    # perturbed student features labelled as teacher: BCE(-3, 1) = log(1 + e^3)
    expected = 3.048587351573742
    assert expected == pytest.approx(softplus(3.0))
    assert adversarial_samples_penalty(torch.tensor([[-3.0]])).item() == pytest.approx(expected, abs=1e-5)


def test_discriminator_loss_default_targets() -> None:
    # real target 1, fake target 0: BCE(2, 1) + BCE(-1, 0) = log(1 + e^-2) + log(1 + e^-1)
    expected = 0.12692801104297263 + 0.31326168751822286
    loss = discriminator_loss(torch.tensor([[2.0]]), torch.tensor([[-1.0]]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert discriminator_loss(torch.zeros(2, 1), torch.zeros(2, 1)).item() == pytest.approx(2 * LOG2, abs=1e-6)


def test_discriminator_loss_penalises_a_confident_wrong_discriminator() -> None:
    good = discriminator_loss(torch.full((4, 1), 5.0), torch.full((4, 1), -5.0))
    bad = discriminator_loss(torch.full((4, 1), -5.0), torch.full((4, 1), 5.0))
    # 2 * log(1 + e^-5) vs 2 * log(1 + e^5)
    assert good.item() == pytest.approx(0.013430, abs=1e-5)
    assert bad.item() == pytest.approx(10.013430, abs=1e-4)


def test_discriminator_loss_label_smoothing_target() -> None:
    # BCE(x, t) = t * log(1 + e^-x) + (1 - t) * log(1 + e^x), target t = 0.9 on real, 0 on fake
    real = (LOG2 + 0.9 * softplus(-2.0) + 0.1 * softplus(2.0)) / 2  # logits 0 and 2
    fake = (LOG2 + softplus(-1.0)) / 2  # logits 0 and -1
    expected = 1.013242029840543
    assert real + fake == pytest.approx(expected)
    loss = discriminator_loss(torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [-1.0]]), real_target=0.9)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_label_smoothing_keeps_a_floor_on_the_real_term() -> None:
    # with target 0.9 a very confident "real" logit is penalised by 0.1 * log(1 + e^x) ~ 0.1 * x
    loss = discriminator_loss(torch.tensor([[20.0]]), torch.tensor([[-20.0]]), real_target=0.9)
    assert loss.item() == pytest.approx(0.9 * softplus(-20.0) + 0.1 * softplus(20.0) + softplus(-20.0), abs=1e-4)
    assert loss.item() == pytest.approx(2.0, abs=1e-4)


# --- logit matching / KD ----------------------------------------------------------------------------------------------

STUDENT = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
TEACHER = torch.tensor([[0.0, 0.0], [3.0, 6.0]])


def test_logit_matching_l2() -> None:
    # squared differences 1, 4, 0, 4 -> mean 9 / 4
    assert logit_matching_loss(STUDENT, TEACHER, kind="l2").item() == pytest.approx(2.25)


def test_logit_matching_l2_is_the_default() -> None:
    assert logit_matching_loss(STUDENT, TEACHER).item() == pytest.approx(2.25)


def test_logit_matching_l1() -> None:
    # absolute differences 1, 2, 0, 2 -> mean 5 / 4
    assert logit_matching_loss(STUDENT, TEACHER, kind="l1").item() == pytest.approx(1.25)


def test_logit_matching_none_is_a_zero_scalar() -> None:
    loss = logit_matching_loss(STUDENT, TEACHER, kind="none")
    assert loss.shape == ()
    assert loss.item() == 0.0
    assert loss.dtype == STUDENT.dtype


def test_logit_matching_kl_is_kd_loss_at_the_given_temperature() -> None:
    student = torch.tensor([[1.0, 2.0, 3.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0]])
    expected = 4 * kl(softmax([3.0, 1.0, 0.0], 2.0), softmax([1.0, 2.0, 3.0], 2.0))
    loss = logit_matching_loss(student, teacher, kind="kl", temperature=2.0)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_logit_matching_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown data term 'mse'"):
        logit_matching_loss(STUDENT, TEACHER, kind="mse")  # type: ignore[arg-type]


def test_kd_loss_hand_computed() -> None:
    # T = 2: p_T = softmax([3, 1, 0] / 2), p_S = softmax([1, 2, 3] / 2); loss = T^2 * sum p_T log(p_T / p_S)
    p_t = softmax([3.0, 1.0, 0.0], 2.0)
    p_s = softmax([1.0, 2.0, 3.0], 2.0)
    assert 4 * kl(p_t, p_s) == pytest.approx(2.0738163287413798)
    loss = kd_loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 1.0, 0.0]]), temperature=2.0)
    assert loss.item() == pytest.approx(2.0738163287413798, abs=1e-5)


def test_kd_loss_direction_is_kl_teacher_to_student() -> None:
    # KL is asymmetric: the reversed direction, KL(p_S || p_T), gives another value
    p_t = softmax([3.0, 1.0, 0.0], 2.0)
    p_s = softmax([1.0, 2.0, 3.0], 2.0)
    assert 4 * kl(p_s, p_t) != pytest.approx(4 * kl(p_t, p_s), abs=1e-2)
    loss = kd_loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 1.0, 0.0]]), temperature=2.0)
    assert loss.item() != pytest.approx(4 * kl(p_s, p_t), abs=1e-2)


def test_kd_loss_batch_mean() -> None:
    # rows: KL 0.518454 and 0.088897 at T = 2 -> mean * T^2
    rows = [([1.0, 2.0, 3.0], [3.0, 1.0, 0.0]), ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0])]
    expected = 4 * sum(kl(softmax(t, 2.0), softmax(s, 2.0)) for s, t in rows) / 2
    assert expected == pytest.approx(1.214702307187099)
    student = torch.tensor([s for s, _ in rows])
    teacher = torch.tensor([t for _, t in rows])
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, abs=1e-5)


def test_kd_loss_temperature_squared_scaling() -> None:
    student = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    teacher = torch.tensor([[1.5, 0.5, -0.5, 1.0]])
    for temperature in (1.0, 3.0, 5.0):
        unscaled = kl(softmax(teacher[0].tolist(), temperature), softmax(student[0].tolist(), temperature))
        loss = kd_loss(student, teacher, temperature=temperature).item()
        assert loss == pytest.approx(temperature**2 * unscaled, rel=1e-4)
        assert loss / unscaled == pytest.approx(temperature**2, rel=1e-4)


def test_kd_loss_at_temperature_one() -> None:
    expected = 1.6851240160639807  # KL(softmax([3, 1, 0]) || softmax([1, 2, 3]))
    loss = kd_loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 1.0, 0.0]]), temperature=1.0)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_kd_loss_zero_for_equal_and_shifted_logits() -> None:
    z = torch.tensor([[0.3, -1.2, 2.0]])
    assert kd_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z + 7.0, z).item() == pytest.approx(0.0, abs=1e-5)  # softmax is shift-invariant


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_kd_loss_rejects_non_positive_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must be positive"):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature=temperature)


def test_hint_loss_hand_computed() -> None:
    # (1 - 0)^2 and (2 - 4)^2 -> mean 5 / 2
    assert hint_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])).item() == pytest.approx(2.5)
    assert hint_loss(torch.ones(3, 4), torch.ones(3, 4)).item() == 0.0


# --- discriminator regularizers ---------------------------------------------------------------------------------------


def test_weight_penalty_l1_and_l2() -> None:
    params = [torch.tensor([[1.0, -2.0], [3.0, 0.0]]), torch.tensor([-0.5])]
    assert weight_penalty(params, norm="l1").item() == pytest.approx(6.5)  # 1 + 2 + 3 + 0 + 0.5
    assert weight_penalty(params, norm="l2").item() == pytest.approx(14.25)  # 1 + 4 + 9 + 0 + 0.25
    assert weight_penalty(params).item() == pytest.approx(14.25)  # l2 by default


def test_weight_penalty_accepts_a_parameter_generator_and_is_differentiable() -> None:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -3.0]]))
        layer.bias.fill_(2.0)
    penalty = weight_penalty(layer.parameters(), norm="l2")
    assert penalty.item() == pytest.approx(14.0)  # 1 + 9 + 4
    penalty.backward()
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[2.0, -6.0]]))  # d/dw sum w^2 = 2w
    torch.testing.assert_close(layer.bias.grad, torch.tensor([4.0]))


def test_weight_penalty_errors() -> None:
    with pytest.raises(ValueError, match="no parameters"):
        weight_penalty([], norm="l2")
    with pytest.raises(ValueError, match="no parameters"):
        weight_penalty(iter(()), norm="l1")
    with pytest.raises(ValueError, match="norm must be 'l1' or 'l2'"):
        weight_penalty([torch.ones(2)], norm="l3")  # type: ignore[arg-type]


def test_r1_penalty_linear_discriminator_is_half_squared_weight_norm() -> None:
    # D(x) = w . x + b  ->  dD/dx = w for every sample  ->  R1 = 0.5 * ||w||^2 = 0.5 * (1 + 4 + 4)
    d = nn.Linear(3, 1)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([[1.0, 2.0, -2.0]]))
        d.bias.fill_(0.5)
    x = torch.randn(4, 3, requires_grad=True)
    penalty = r1_penalty(d(x), x)
    assert penalty.item() == pytest.approx(4.5)
    # create_graph=True: the penalty trains D, d/dw 0.5 * ||w||^2 = w, and the bias does not enter it
    penalty.backward()
    torch.testing.assert_close(d.weight.grad, torch.tensor([[1.0, 2.0, -2.0]]))
    assert d.bias.grad is None or float(d.bias.grad.abs().sum()) == 0.0


def test_r1_penalty_is_a_batch_mean_of_per_sample_squared_norms() -> None:
    # D(x) = sum x^2 -> dD/dx = 2x -> per sample 0.5 * 4 ||x||^2 = 2 ||x||^2: rows give 2 and 4, mean 3
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    penalty = r1_penalty(x.pow(2).sum(dim=1, keepdim=True), x)
    assert penalty.item() == pytest.approx(3.0)


def test_r1_penalty_needs_inputs_that_require_grad() -> None:
    d = nn.Linear(3, 1)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="requires_grad=True"):
        r1_penalty(d(x), x)


# --- adversarial sample / instance noise ------------------------------------------------------------------------------


def test_adversarial_sample_keeps_the_expectation() -> None:
    torch.manual_seed(0)
    x = torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0])
    samples = adversarial_sample(x.expand(40_000, -1).contiguous(), p=0.5)
    # each entry is 0 or 2x with prob 1/2: std of the mean is |x| / sqrt(40000) <= 0.01
    torch.testing.assert_close(samples.mean(dim=0), x, atol=0.05, rtol=0.0)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_adversarial_sample_zeroes_about_p_and_rescales_the_rest(p: float) -> None:
    torch.manual_seed(1)
    x = torch.full((400, 500), 3.0)
    out = adversarial_sample(x, p=p)
    dropped = (out == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.01)  # 200k Bernoulli draws: std <= 0.0012
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 3.0 / (1 - p)))


def test_adversarial_sample_is_identity_outside_training() -> None:
    x = torch.randn(8, 16)
    torch.testing.assert_close(adversarial_sample(x, p=0.5, training=False), x, rtol=0, atol=0)
    torch.testing.assert_close(adversarial_sample(x, p=0.0), x, rtol=0, atol=0)


def test_adversarial_sample_passes_gradient_only_through_kept_entries() -> None:
    torch.manual_seed(2)
    x = torch.ones(4, 32, requires_grad=True)
    out = adversarial_sample(x, p=0.5)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() * 2.0)


def test_instance_noise_std() -> None:
    torch.manual_seed(0)
    x = torch.full((200_000,), 5.0)
    noisy = instance_noise(x, std=0.5)
    delta = noisy - x
    assert delta.std().item() == pytest.approx(0.5, abs=0.005)
    assert delta.mean().item() == pytest.approx(0.0, abs=0.005)


def test_instance_noise_zero_std_is_identity() -> None:
    x = torch.randn(3, 4)
    assert instance_noise(x, std=0.0) is x


# --- attention transfer -----------------------------------------------------------------------------------------------


def test_attention_map_hand_computed() -> None:
    # channels [[1, 2]] and [[3, 0]]: mean_c A^2 = [(1 + 9) / 2, (4 + 0) / 2] = [5, 2] -> / sqrt(29)
    fm = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    expected = torch.tensor([[5.0 / math.sqrt(29.0), 2.0 / math.sqrt(29.0)]])
    torch.testing.assert_close(attention_map(fm), expected)


def test_attention_map_has_unit_l2_norm_per_sample() -> None:
    torch.manual_seed(0)
    am = attention_map(torch.randn(3, 4, 5, 6) * torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1, 1))
    assert am.shape == (3, 30)
    torch.testing.assert_close(am.norm(dim=1), torch.ones(3))


def test_attention_map_odd_p_uses_absolute_values() -> None:
    fm = -torch.ones(1, 1, 2, 2)
    torch.testing.assert_close(attention_map(fm, p=1), torch.full((1, 4), 0.5))


def test_attention_map_rejects_non_4d() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        attention_map(torch.randn(2, 3, 4))


def test_attention_transfer_loss_zero_for_identical_and_rescaled_maps() -> None:
    torch.manual_seed(0)
    fm = torch.randn(2, 3, 4, 4)
    assert attention_transfer_loss(fm, fm.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # the maps are normalised, and the channel count may differ
    assert attention_transfer_loss(3.0 * fm, fm).item() == pytest.approx(0.0, abs=1e-7)
    assert attention_transfer_loss(torch.cat([fm, fm], dim=1), fm).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_transfer_loss_hand_computed() -> None:
    # attention maps [1, 0] and [0, 1]: squared differences 1 and 1 -> mean 1
    student = torch.tensor([[[[1.0, 0.0]]]])
    teacher = torch.tensor([[[[0.0, 1.0]]]])
    assert attention_transfer_loss(student, teacher).item() == pytest.approx(1.0)


def test_attention_transfer_loss_resizes_student_to_teacher() -> None:
    torch.manual_seed(0)
    student = torch.rand(2, 3, 4, 4)
    teacher = torch.rand(2, 5, 8, 8)
    resized = F.interpolate(student, size=(8, 8), mode="bilinear", align_corners=False)
    expected = (attention_map(resized) - attention_map(teacher)).pow(2).mean()
    loss = attention_transfer_loss(student, teacher)
    assert loss.item() > 0
    torch.testing.assert_close(loss, expected)
    # a constant map stays constant under resizing
    assert attention_transfer_loss(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 8, 8)).item() == pytest.approx(0.0)


def test_attention_transfer_loss_rejects_non_4d() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        attention_transfer_loss(torch.randn(2, 4, 4), torch.randn(2, 4, 4))


def test_attention_transfer_loss_rejects_non_4d_of_different_sizes_with_its_own_message() -> None:
    with pytest.raises(ValueError, match="attention transfer needs"):
        attention_transfer_loss(torch.randn(2, 4, 4), torch.randn(2, 3, 3))
