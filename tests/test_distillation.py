"""The knowledge-transfer baselines: each term trains the student, label-free unless asked, errors name the fix."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_same_state, fit, state
from tiny_networks import IMAGE_SHAPE, make_data, make_loader, make_networks
from torch.utils.data import DataLoader, TensorDataset

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
