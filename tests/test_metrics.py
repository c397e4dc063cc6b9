"""The one metrics collection: values against an independent count, the same names whatever the module."""

from __future__ import annotations

import torch
from torchmetrics.classification import BinaryAccuracy

from lightning_advkd.metrics import TOP5_MIN_CLASSES, DiscriminatorAccuracy, EvaluationMetrics, discriminator_accuracies


def test_discriminator_accuracy_thresholds_logits_at_zero_and_accumulates():
    real, fake = DiscriminatorAccuracy(real=True), DiscriminatorAccuracy(real=False)
    batches = [torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.7, -0.2])]
    for logits in batches:
        real.update(logits)
        fake.update(logits)
    everything = torch.cat(batches)
    assert real.compute() == (everything > 0).float().mean()
    assert fake.compute() == (everything < 0).float().mean()
    # BinaryAccuracy reads logits that all lie in [0, 1] as probabilities (0.3 -> "fake"): not a logit threshold.
    assert BinaryAccuracy()(torch.tensor([0.3, 0.7]), torch.ones(2)) == 0.5
    real.reset()
    real.update(torch.tensor([0.3, 0.7]))
    assert real.compute() == 1.0
    assert discriminator_accuracies(torch.tensor([0.3, 0.7]), torch.tensor([0.1, -0.1]))[1] == 0.5


def test_collection_matches_a_hand_count_and_feeds_labelled_metrics_only_with_labels():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(50, 10, generator=generator), torch.randn(50, 10, generator=generator)
    labels = torch.randint(0, 10, (50,), generator=generator)
    metrics = EvaluationMetrics(10, "test/", discriminator=True)
    metrics.update(student, teacher, labels=labels, real_logits=torch.ones(50), fake_logits=-torch.ones(50))
    values = metrics.compute()
    assert values["test/student_acc"] == (student.argmax(1) == labels).float().mean()
    assert values["test/teacher_acc"] == (teacher.argmax(1) == labels).float().mean()
    assert values["test/agreement"] == (student.argmax(1) == teacher.argmax(1)).float().mean()
    top5 = (student.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean()
    assert values["test/student_acc_top5"] == top5
    assert values["test/d_acc_real"] == 1.0 and values["test/d_acc_fake"] == 1.0

    label_free = EvaluationMetrics(10, "val/")
    label_free.update(student, teacher)
    assert set(label_free.compute()) == {"val/agreement"}
    assert [len(c) for c in label_free.collections(labelled=False)] == [1]


def test_one_top5_rule_and_no_teacher_metrics_without_a_teacher():
    assert "student_acc_top5" not in dict(EvaluationMetrics(TOP5_MIN_CLASSES - 1, "val/").labelled.items(True))
    assert "student_acc_top5" in dict(EvaluationMetrics(TOP5_MIN_CLASSES, "val/").labelled.items(True))
    alone = EvaluationMetrics(10, "val/", teacher=False)
    assert set(dict(alone.labelled.items(True))) == {"student_acc", "student_acc_top5"} and not len(alone.label_free)
