"""The evaluation metrics of every module of the package, under one set of names.

``<stage>/student_acc`` (and ``<stage>/student_acc_top5`` when there are more than 5 classes), ``<stage>/teacher_acc``
and ``<stage>/agreement`` when a teacher is known, ``<stage>/d_acc_real`` and ``<stage>/d_acc_fake`` for modules with a
discriminator. Accuracies are micro-averaged top-1 (the usual accuracy); labelled metrics are fed only by batches
that carry labels, so label-free validation still reports agreement and the discriminator's accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

#: Top-5 accuracy is reported only above this many classes (with 5 or fewer it is always 1).
TOP5_MIN_CLASSES = 6


def discriminator_accuracies(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Fraction of teacher inputs the discriminator calls real (logit > 0) and of student inputs it calls fake.

    Example:
        >>> discriminator_accuracies(torch.tensor([1.0, -1.0]), torch.tensor([-2.0, -3.0]))
        (tensor(0.5000), tensor(1.))
    """
    return (real_logits.detach() > 0).float().mean(), (fake_logits.detach() < 0).float().mean()


class DiscriminatorAccuracy(Metric):
    """Accuracy of a discriminator on one side: teacher inputs (``real=True``, logit > 0) or student inputs.

    Thresholds raw logits at 0 whatever their range (unlike ``BinaryAccuracy``, which would read logits that happen
    to lie in [0, 1] as probabilities).

    Example:
        >>> metric = DiscriminatorAccuracy(real=True)
        >>> metric.update(torch.tensor([0.3, -1.0, 2.0, 0.7]))
        >>> metric.compute()
        tensor(0.7500)
    """

    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, real: bool, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.real = real
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: Tensor) -> None:
        """Count the discriminator's calls on a batch of its raw logits."""
        logits = logits.detach().flatten()
        hits = logits > 0 if self.real else logits < 0
        self.correct += hits.sum()
        self.total += logits.numel()

    def compute(self) -> Tensor:
        """The fraction of correct calls."""
        return self.correct.float() / self.total.clamp(min=1)


class EvaluationMetrics(nn.Module):
    """The metrics of one stage (``"val/"``, ``"test/"``, ``"train/"``), labelled and label-free.

    Args:
        num_classes: the class count.
        prefix: the stage prefix of every name.
        teacher: measure the teacher's accuracy and the student's agreement with it.
        discriminator: measure the discriminator's accuracy on teacher and student inputs.

    Example:
        >>> metrics = EvaluationMetrics(3, "val/")
        >>> metrics.update(torch.eye(3), torch.eye(3), labels=torch.tensor([0, 1, 1]))
        >>> {name: round(float(value), 3) for name, value in sorted(metrics.compute().items())}
        {'val/agreement': 1.0, 'val/student_acc': 0.667, 'val/teacher_acc': 0.667}
    """

    def __init__(self, num_classes: int, prefix: str, *, teacher: bool = True, discriminator: bool = False) -> None:
        super().__init__()
        self.prefix = prefix
        labelled: dict[str, Metric | MetricCollection] = {"student_acc": _accuracy(num_classes)}
        if num_classes >= TOP5_MIN_CLASSES:
            labelled["student_acc_top5"] = _accuracy(num_classes, top_k=5)
        label_free: dict[str, Metric | MetricCollection] = {}
        if teacher:
            labelled["teacher_acc"] = _accuracy(num_classes)
            label_free["agreement"] = _accuracy(num_classes)
        if discriminator:
            label_free["d_acc_real"] = DiscriminatorAccuracy(real=True)
            label_free["d_acc_fake"] = DiscriminatorAccuracy(real=False)
        self.labelled = MetricCollection(labelled, prefix=prefix)
        self.label_free = MetricCollection(label_free, prefix=prefix)

    def update(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        real_logits: Tensor | None = None,
        fake_logits: Tensor | None = None,
    ) -> None:
        """Feed one batch; labelled metrics only when ``labels`` is given."""
        student_logits = student_logits.detach()
        metrics = dict(self.label_free.items(keep_base=True))
        if teacher_logits is not None and "agreement" in metrics:
            metrics["agreement"].update(student_logits, teacher_logits.argmax(dim=1))
        if real_logits is not None and "d_acc_real" in metrics:
            metrics["d_acc_real"].update(real_logits)
        if fake_logits is not None and "d_acc_fake" in metrics:
            metrics["d_acc_fake"].update(fake_logits)
        if labels is None:
            return
        for name, metric in self.labelled.items(keep_base=True):
            if name == "teacher_acc":
                if teacher_logits is not None:
                    metric.update(teacher_logits.detach(), labels)
            else:
                metric.update(student_logits, labels)

    def collections(self, labelled: bool) -> list[MetricCollection]:
        """What to hand to ``LightningModule.log_dict`` after a batch.

        Args:
            labelled: whether the batch had labels.

        Returns:
            The label-free metrics (when there are any), and the labelled ones when the batch had labels (a metric
            that was never fed must not be logged).
        """
        chosen = [self.label_free] if len(self.label_free) else []
        return [*chosen, self.labelled] if labelled else chosen

    def compute(self) -> dict[str, Tensor]:
        """Every fed metric's value by its full name (for use outside a Trainer)."""
        fed = any(metric.update_called for metric in self.labelled.values())
        return {name: value for collection in self.collections(fed) for name, value in collection.compute().items()}


def _accuracy(num_classes: int, top_k: int = 1) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes, top_k=top_k, average="micro")


__all__ = ["TOP5_MIN_CLASSES", "DiscriminatorAccuracy", "EvaluationMetrics", "discriminator_accuracies"]
