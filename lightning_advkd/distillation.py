"""The non-adversarial knowledge-transfer baselines ANC is compared with, as one LightningModule.

Hinton KD (KL of tempered softmaxes), L2 and L1 on logits, a FitNets-style hint (L2 between adapted student and
teacher features) and attention transfer (Zagoruyko & Komodakis), each with a weight; ``label_weight`` adds
cross-entropy on labels for the "with labels" variants. All terms but the last are label-free. The terms are the
package's one student objective (:class:`~lightning_advkd.objective.StudentObjective`), the one
:class:`~lightning_advkd.AdversarialDistillation` uses next to its adversarial term.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, Literal

from torch import Tensor, nn
from typing_extensions import override

from lightning_advkd import functional as AF
from lightning_advkd.features import FeatureTap, make_adapter
from lightning_advkd.objective import StudentObjective, renamed, total
from lightning_advkd.optim import OptimizerFactory, SchedulerFactory, default_student_optimizer
from lightning_advkd.teacher_cache import cached_attention
from lightning_advkd.teacher_student import TeacherStudentModule


class KnowledgeDistillation(TeacherStudentModule):
    """Knowledge-transfer baselines: a weighted sum of KD, logit-L2, hint, attention-transfer and label terms.

    Args:
        teacher: the frozen teacher.
        student: the network to train.
        kd_weight: weight of Hinton KD at ``kd_temperature`` (``T^2``-scaled KL).
        kd_temperature: KD softmax temperature.
        logit_l2_weight: weight of the mean squared error between logits.
        logit_l1_weight: weight of the mean absolute error between logits.
        hint_weight: weight of the FitNets-style hint on the tapped (pooled) features, through a learned adapter.
        attention_weight: weight of attention transfer, summed over ``attention_pairs``.
        attention_pairs: ``(student layer, teacher layer)`` names whose ``(N, C, H, W)`` outputs are compared.
        label_weight: weight of cross-entropy on labels (0: label-free training).
        label_smoothing: label smoothing of that cross-entropy.
        student_optimizer: factory ``params -> Optimizer``; default SGD lr 0.05, momentum 0.9, wd 5e-4.
        student_scheduler: factory ``optimizer -> LRScheduler`` or ``None``; stepped every ``scheduler_interval``.
        scheduler_interval: ``"epoch"`` or ``"step"``.
        temperature: deprecated name of ``kd_temperature``.
        optimizer: deprecated name of ``student_optimizer``.
        scheduler: deprecated name of ``student_scheduler``.
        **kwargs: the shared options of :class:`~lightning_advkd.teacher_student.TeacherStudentModule`
            (``teacher_tap``, ``student_tap``, ``input_shape``, ``num_classes``, ``teacher_output``,
            ``student_output``, ``input_key``, ``label_key``, ...).

    Raises:
        ValueError: when every weight is 0, or attention transfer has no layer pairs.

    Example:
        >>> from torch import nn
        >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> student = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
        >>> KnowledgeDistillation(teacher, student, kd_weight=1.0).loss_weights
        {'kd': 1.0}
    """

    def __init__(
        self,
        teacher: nn.Module | None = None,
        student: nn.Module | None = None,
        *,
        kd_weight: float = 1.0,
        kd_temperature: float = 4.0,
        logit_l2_weight: float = 0.0,
        logit_l1_weight: float = 0.0,
        hint_weight: float = 0.0,
        attention_weight: float = 0.0,
        attention_pairs: Sequence[Sequence[str]] | None = None,
        label_weight: float = 0.0,
        label_smoothing: float = 0.0,
        student_optimizer: OptimizerFactory | None = None,
        student_scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        temperature: float | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        **kwargs: Any,
    ) -> None:
        owner = "KnowledgeDistillation"
        if temperature is not None:
            kd_temperature = renamed("temperature", "kd_temperature", temperature, owner)
        if optimizer is not None:
            student_optimizer = renamed("optimizer", "student_optimizer", optimizer, owner)
        if scheduler is not None:
            student_scheduler = renamed("scheduler", "student_scheduler", scheduler, owner)
        self.objective = StudentObjective(
            kd_weight=kd_weight, kd_temperature=kd_temperature, logit_l2_weight=logit_l2_weight,
            logit_l1_weight=logit_l1_weight, hint_weight=hint_weight, attention_weight=attention_weight,
            label_weight=label_weight, label_smoothing=label_smoothing,
        )  # fmt: skip
        self.loss_weights = self.objective.weights
        if not self.loss_weights:
            raise ValueError(
                "every loss weight is 0: set at least one of kd/logit_l2/logit_l1/hint/attention/label weights"
            )
        if attention_weight > 0 and not attention_pairs:
            raise ValueError("attention transfer needs attention_pairs=[(student layer, teacher layer), ...]")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        super().__init__(teacher, student, logit_term_on=self.objective.compares_logits, **kwargs)
        self.save_hyperparameters(
            ignore=["teacher", "student", "student_optimizer", "student_scheduler", "temperature", "optimizer",
                    "scheduler", "teacher_output", "student_output"]
        )  # fmt: skip
        teacher_width, student_width = self.feature_widths
        self.adapter = make_adapter(student_width, teacher_width) if hint_weight > 0 else nn.Identity()
        pairs = [tuple(pair) for pair in attention_pairs or []] if attention_weight > 0 else []
        self.attention_taps = [
            (
                FeatureTap(self.student, s, role="student", pool=False),
                FeatureTap(self.teacher, t, role="teacher", pool=False),
            )
            for s, t in pairs
        ]
        self._optimizer_factory = student_optimizer or default_student_optimizer
        self._scheduler_factory = student_scheduler

    def _forward_both(
        self, batch: Any, inputs: Tensor
    ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], list[Tensor]]:
        """Teacher and student ``(feature, logits)`` and the attention-transfer terms, from one pass of each."""
        cached_maps = cached_attention(batch, [t.tap for _, t in self.attention_taps])
        cached = cached_maps is not None
        with ExitStack() as stack:
            for student_tap, teacher_tap in self.attention_taps:
                stack.enter_context(student_tap.capture())
                if not cached:
                    stack.enter_context(teacher_tap.capture())
            teacher = self._teacher_outputs(batch, inputs)
            student = self._student_forward_raw(inputs)
        attention = []
        for index, (student_tap, teacher_tap) in enumerate(self.attention_taps):
            if cached_maps is not None:
                attention.append(AF.attention_distance(student_tap.pop(), cached_maps[index]))
            else:
                attention.append(AF.attention_transfer_loss(student_tap.pop(), teacher_tap.pop()))
        return teacher, student, attention

    def _loss_terms(
        self, batch: Any, split: tuple[Tensor, Tensor | None] | None = None, labels_required: bool = True
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        inputs, labels = split or self._split(batch)
        (teacher_features, teacher_logits), (student_features, student_logits), attention = self._forward_both(
            batch, inputs
        )
        hint_features = self.adapter(student_features) if "hint" in self.loss_weights else None
        terms = self.objective.terms(
            student_logits, teacher_logits, student_features=hint_features, teacher_features=teacher_features,
            attention=attention, labels=labels, labels_required=labels_required,
        )  # fmt: skip
        return terms, student_logits, teacher_logits

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        terms, _, _ = self._loss_terms(batch)
        loss = total(terms)
        self.log_dict({f"train/loss/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=False)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    def _evaluation_step(self, batch: Any, batch_idx: int, stage: str) -> None:
        split = self._split_for_evaluation(batch, batch_idx, stage)
        labels = split[1]  # label-free evaluation data: the loss is the label-free terms
        terms, student_logits, teacher_logits = self._loss_terms(batch, split, labels_required=False)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(student_logits, teacher_logits, labels=labels)
        self._log_metrics(metrics, labelled=labels is not None)
        if terms:
            self.log(f"{stage}/loss", total(terms), on_step=False, on_epoch=True)

    @override
    def configure_optimizers(self) -> Any:
        optimizer = self._optimizer_factory(list(self.student.parameters()) + list(self.adapter.parameters()))
        if self._scheduler_factory is None:
            return optimizer
        scheduler = self._scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams["scheduler_interval"]},
        }


__all__ = ["KnowledgeDistillation"]
