"""The knowledge-transfer baselines: each term trains the student, label-free unless asked, errors name the fix."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from helpers import assert_same_state, fit, state
from tiny_networks import IMAGE_SHAPE, make_data, make_loader, make_networks
from torch.utils.data import DataLoader, TensorDataset

from lightning_advkd import AdversarialDistillation, R1Penalty
from lightning_advkd import functional as AF
from lightning_advkd.distillation import KnowledgeDistillation


def build(**kwargs) -> KnowledgeDistillation:
    teacher, student = make_networks()
    return KnowledgeDistillation(teacher, student, **kwargs)


@pytest.mark.parametrize(
    "weights",
    [
        {"kd_weight": 1.0},
        {"kd_weight": 0.0, "logit_l2_weight": 1.0},
        {"kd_weight": 1.0, "hint_weight": 1.0},
        {"kd_weight": 1.0, "attention_weight": 100.0, "attention_pairs": [("body", "body")]},
        {"kd_weight": 0.0, "label_weight": 1.0},
        {"kd_weight": 0.0, "logit_l1_weight": 1.0},
    ],
)
def test_each_baseline_trains_the_student_and_leaves_the_teacher(weights):
    module = build(**weights)
    teacher_before, student_before = state(module.teacher), state(module.student)
    trainer = fit(module, make_loader(), make_loader())
    assert_same_state(teacher_before, state(module.teacher))
    assert any(not torch.equal(v, state(module.student)[k]) for k, v in student_before.items())
    for name in module.loss_weights:
        assert torch.isfinite(trainer.callback_metrics[f"train/loss/{name}"])
    assert "val/agreement" in trainer.callback_metrics and "val/student_acc" in trainer.callback_metrics


def test_loss_terms_match_the_functional_definitions():
    module = build(kd_weight=2.0, logit_l2_weight=3.0, kd_temperature=2.0)
    x = make_data(8)[0]
    terms, student_logits, teacher_logits = module._loss_terms(x)
    torch.testing.assert_close(terms["kd"], 2.0 * AF.kd_loss(student_logits, teacher_logits, 2.0))
    torch.testing.assert_close(terms["logit_l2"], 3.0 * ((student_logits - teacher_logits) ** 2).mean())


def test_label_free_baselines_ignore_labels():
    images, labels = make_data(64)

    def run(dataset):
        torch.manual_seed(0)
        module = build(kd_weight=1.0, hint_weight=1.0)
        fit(module, DataLoader(dataset, batch_size=16))
        return state(module.student)

    assert_same_state(
        run(TensorDataset(images, labels)), run(TensorDataset(images, labels.flip(0)))
    )  # fmt: skip
    assert_same_state(run(TensorDataset(images, labels)), run(TensorDataset(images)))


def test_bad_configurations_name_the_fix():
    with pytest.raises(ValueError, match="every loss weight is 0"):
        build(kd_weight=0.0)
    with pytest.raises(ValueError, match="attention_pairs"):
        build(attention_weight=1.0)
    with pytest.raises(ValueError, match="has no labels"):
        fit(build(kd_weight=0.0, label_weight=1.0), make_loader(labels=False))
    with pytest.raises(ValueError, match="Close names"):
        build(attention_weight=1.0, attention_pairs=[("bodyy", "body")], input_shape=IMAGE_SHAPE)


def test_kd_is_adversarial_distillation_with_the_discriminator_off():
    """KD and ANC at adversarial weight 0 train the same student, bit for bit: the benchmark's KD row and the
    default's discriminator-off twin coincide.

    For a student without dropout and a loader whose order does not come from the global random stream (the
    benchmark's): ANC's adapter and adversarial samples draw from that stream, so a dropout student's masks differ.
    """
    sgd = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    builders = (
        lambda t, s: KnowledgeDistillation(t, s, optimizer=sgd),
        lambda t, s: AdversarialDistillation(t, s, adversarial_weight=0.0, student_optimizer=sgd),
    )
    students = []
    for make in builders:
        L.seed_everything(0, verbose=False)
        teacher, student = make_networks()
        student.dropout = torch.nn.Identity()
        module = make(teacher, student)
        callbacks = [R1Penalty()] if isinstance(module, AdversarialDistillation) else []
        fit(module, make_loader(), max_epochs=2, callbacks=callbacks)
        students.append(state(module.student))
    assert_same_state(*students)
    assert not torch.equal(students[0]["fc.weight"], make_networks()[1].fc.weight), "the student trained"
