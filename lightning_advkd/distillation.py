"""The non-adversarial knowledge-transfer baselines ANC is compared with, as one LightningModule.

Hinton KD (KL of tempered softmaxes), L2 on logits, a FitNets-style hint (L2 between adapted student and teacher
features) and attention transfer (Zagoruyko & Komodakis), each with a weight; ``label_weight`` adds cross-entropy on
labels for the "with labels" variants. All terms but the last are label-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from typing_extensions import override

from lightning_advkd import functional as AF
from lightning_advkd.features import FeatureTap, make_adapter
from lightning_advkd.module import default_student_optimizer
from lightning_advkd.teacher_cache import TEACHER_ATTENTION, TEACHER_LOGITS
from lightning_advkd.teacher_student import TeacherStudentModule


class KnowledgeDistillation(TeacherStudentModule):
    """Knowledge-transfer baselines: a weighted sum of KD, logit-L2, hint, attention-transfer and label terms.

    Args:
        teacher: the frozen teacher.
        student: the network to train.
        kd_weight: weight of Hinton KD at ``temperature`` (``T^2``-scaled KL).
        temperature: KD softmax temperature.
        logit_l2_weight: weight of the mean squared error between logits.
        hint_weight: weight of the FitNets-style hint on the tapped (pooled) features, through a learned adapter.
        attention_weight: weight of attention transfer, summed over ``attention_pairs``.
        attention_pairs: ``(student layer, teacher layer)`` names whose ``(N, C, H, W)`` outputs are compared.
        label_weight: weight of cross-entropy on labels (0: label-free training).
        optimizer: factory ``params -> Optimizer``; default SGD lr 0.05, momentum 0.9, wd 5e-4.
        scheduler: factory ``optimizer -> LRScheduler`` or ``None``; stepped every ``scheduler_interval``.
        scheduler_interval: ``"epoch"`` or ``"step"``.
        **kwargs: the shared options of :class:`~lightning_advkd.teacher_student.TeacherStudentModule`
            (``teacher_tap``, ``student_tap``, ``input_shape``, ``num_classes``, ``input_key``, ``label_key``, ...).

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
        temperature: float = 4.0,
        logit_l2_weight: float = 0.0,
        hint_weight: float = 0.0,
        attention_weight: float = 0.0,
        attention_pairs: Sequence[Sequence[str]] | None = None,
        label_weight: float = 0.0,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer] | None = None,
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        **kwargs: Any,
    ) -> None:
        weights = {"kd": kd_weight, "logit_l2": logit_l2_weight, "hint": hint_weight,
                   "attention": attention_weight, "labels": label_weight}  # fmt: skip
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {weights}")
        self.loss_weights = {name: w for name, w in weights.items() if w > 0}
        if not self.loss_weights:
            raise ValueError("every loss weight is 0: set at least one of kd/logit_l2/hint/attention/label weights")
        if attention_weight > 0 and not attention_pairs:
            raise ValueError("attention transfer needs attention_pairs=[(student layer, teacher layer), ...]")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        logit_term_on = kd_weight > 0 or logit_l2_weight > 0
        super().__init__(teacher, student, logit_term_on=logit_term_on, **kwargs)
        self.save_hyperparameters(ignore=["teacher", "student", "optimizer", "scheduler"])
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
        self._optimizer_factory = optimizer or default_student_optimizer
        self._scheduler_factory = scheduler
        self.val_metrics = self._make_metrics("val/")
        self.test_metrics = self._make_metrics("test/")

    def _forward_both(
        self, batch: Any, inputs: Tensor
    ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], list[Tensor]]:
        """Teacher and student ``(feature, logits)`` and the attention-transfer terms, from one pass of each."""
        cached = isinstance(batch, dict) and TEACHER_LOGITS in batch
        if cached:
            missing = [t.tap for _, t in self.attention_taps if TEACHER_ATTENTION + t.tap not in batch]
            if missing:
                raise ValueError(
                    f"the teacher-output cache holds no attention maps of teacher layers {missing}: build it with "
                    f"TeacherOutputCache(..., attention_layers={missing})"
                )
        with ExitStack() as stack:
            for student_tap, teacher_tap in self.attention_taps:
                stack.enter_context(student_tap.capture())
                if not cached:
                    stack.enter_context(teacher_tap.capture())
            teacher = self._teacher_outputs(batch, inputs)
            student = self._student_forward_raw(inputs)
        attention = []
        for student_tap, teacher_tap in self.attention_taps:
            if cached:
                attention.append(AF.attention_distance(student_tap.pop(), batch[TEACHER_ATTENTION + teacher_tap.tap]))
            else:
                attention.append(AF.attention_transfer_loss(student_tap.pop(), teacher_tap.pop()))
        return teacher, student, attention

    def _loss_terms(self, batch: Any) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        inputs, labels = self._split(batch)
        (teacher_features, teacher_logits), (student_features, student_logits), attention = self._forward_both(
            batch, inputs
        )
        w = self.loss_weights
        terms: dict[str, Tensor] = {}
        if "kd" in w:
            terms["kd"] = w["kd"] * AF.kd_loss(student_logits, teacher_logits, self.hparams.temperature)
        if "logit_l2" in w:
            terms["logit_l2"] = w["logit_l2"] * F.mse_loss(student_logits, teacher_logits)
        if "hint" in w:
            terms["hint"] = w["hint"] * AF.hint_loss(self.adapter(student_features), teacher_features)
        if "attention" in w:
            terms["attention"] = w["attention"] * torch.stack(attention).sum()
        if "labels" in w:
            if labels is None:
                raise ValueError("label_weight > 0 but the training batch has no labels; set label_weight=0")
            terms["labels"] = w["labels"] * F.cross_entropy(student_logits, labels)
        return terms, student_logits, teacher_logits

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        terms, _, _ = self._loss_terms(batch)
        loss = torch.stack(list(terms.values())).sum()
        self.log_dict({f"train/loss/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=False)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, self.val_metrics)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, self.test_metrics)

    def _evaluation_step(self, batch: Any, metrics: nn.ModuleDict) -> None:
        _, labels = self._split(batch)
        terms, student_logits, teacher_logits = self._loss_terms(batch)
        prefix = metrics["label_free"].prefix
        self._update_classification_metrics(metrics, student_logits, teacher_logits, labels)
        self.log_dict(metrics["label_free"], on_step=False, on_epoch=True)
        self.log(f"{prefix}loss", torch.stack(list(terms.values())).sum(), on_step=False, on_epoch=True)

    @override
    def configure_optimizers(self) -> Any:
        optimizer = self._optimizer_factory(list(self.student.parameters()) + list(self.adapter.parameters()))
        if self._scheduler_factory is None:
            return optimizer
        scheduler = self._scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }
