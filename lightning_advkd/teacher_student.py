"""What every teacher-student LightningModule of this package shares.

A frozen teacher kept in eval mode and run without autograd; feature taps on both networks; the class count and the
feature widths discovered at construction; label-free and labelled evaluation metrics; checkpoints that leave the
teacher out (a fingerprint is checked instead) and carry the random generators' state; export of the student.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_advkd._rng import get_rng_state, set_rng_state
from lightning_advkd.batch import split_batch
from lightning_advkd.features import FeatureTap, FeatureTapError, first_tensor, static_feature_width, static_num_classes
from lightning_advkd.fingerprint import teacher_fingerprint
from lightning_advkd.teacher_cache import TEACHER_FEATURES, TEACHER_KEY, TEACHER_LOGITS, teacher_cache_key

CHECKPOINT_KEY = "lightning_advkd"
TEACHER_PREFIX = "teacher."


class TeacherStudentModule(L.LightningModule):
    """Base class of the distillation modules; see :class:`~lightning_advkd.AdversarialDistillation` for the args.

    Subclasses call ``super().__init__`` with the shared arguments, then ``save_hyperparameters``, and extend
    :meth:`_extra_checkpoint_state` / :meth:`_load_extra_checkpoint_state` for their own counters.

    Args:
        teacher: the frozen teacher.
        student: the network to train.
        teacher_tap: where the teacher's feature is read; default: the input of its last ``nn.Linear``.
        student_tap: the same for the student.
        input_shape: shape of one input; when given, both networks run once at construction.
        num_classes: class count for the metrics; default: read off the teacher.
        logit_term_on: whether a loss compares logits (then the class counts must agree).
        input_key: key of the input in dict batches.
        label_key: key of the labels in dict batches.
        include_teacher_in_checkpoint: keep the teacher's weights in checkpoints.
        restore_rng_state: store and restore the random generators' state in checkpoints.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        student: nn.Module | None,
        *,
        teacher_tap: str | None = None,
        student_tap: str | None = None,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        logit_term_on: bool = True,
        input_key: str = "image",
        label_key: str = "label",
        include_teacher_in_checkpoint: bool = False,
        restore_rng_state: bool = True,
    ) -> None:
        super().__init__()
        _check_networks(teacher, student)
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student
        self.teacher_tap = FeatureTap(self.teacher, teacher_tap, role="teacher")
        self.student_tap = FeatureTap(self.student, student_tap, role="student")
        self.input_key, self.label_key = input_key, label_key
        self.include_teacher_in_checkpoint = include_teacher_in_checkpoint
        self.restore_rng_state = restore_rng_state
        teacher_width, student_width, teacher_classes, student_classes = self._discover_shapes(input_shape)
        self.feature_widths = (teacher_width, student_width)
        if logit_term_on and None not in (teacher_classes, student_classes) and teacher_classes != student_classes:
            raise ValueError(
                f"teacher predicts {teacher_classes} classes but student {student_classes}, and a loss term compares "
                f"their logits: build the student with num_classes={teacher_classes}, or turn the logit term off"
            )
        self.num_classes = num_classes or teacher_classes or student_classes
        if self.num_classes is None:
            raise ValueError("cannot tell the number of classes: pass num_classes= or input_shape=")
        self._fingerprint: str | None = None
        self._rng_state_to_restore: dict[str, Any] | None = None
        self._cache_key_checked = False

    # ------------------------------------------------------------------ construction

    def _discover_shapes(self, input_shape: Sequence[int] | None) -> tuple[int, int, int | None, int | None]:
        """Feature widths and class counts, read off Linear layers or, with ``input_shape``, from one forward pass."""
        if input_shape is not None:
            example = torch.zeros(2, *input_shape)
            was_training = self.student.training
            self.student.eval()
            with torch.no_grad():
                teacher_features, teacher_logits = _forward_with_tap(self.teacher, self.teacher_tap, example)
                student_features, student_logits = _forward_with_tap(self.student, self.student_tap, example)
            self.student.train(was_training)
            return (
                teacher_features.shape[1], student_features.shape[1],
                _class_count(teacher_logits), _class_count(student_logits),
            )  # fmt: skip
        widths = []
        for model, tap in ((self.teacher, self.teacher_tap), (self.student, self.student_tap)):
            width = static_feature_width(model, tap.tap)
            if width is None:
                raise FeatureTapError(
                    f"cannot tell the width of {tap.role} tap {tap.tap!r} without running the network: pass "
                    "input_shape=(channels, height, width) of one input"
                )
            widths.append(width)
        return widths[0], widths[1], static_num_classes(self.teacher), static_num_classes(self.student)

    def _make_metrics(self, prefix: str, label_free_extra: dict[str, Metric] | None = None) -> nn.ModuleDict:
        """Label-free metrics (always fed) and labelled ones (fed only when a batch has labels)."""
        labelled: dict[str, Metric] = {
            "student_acc": MulticlassAccuracy(self.num_classes, average="micro"),
            "teacher_acc": MulticlassAccuracy(self.num_classes, average="micro"),
        }
        if self.num_classes > 5:
            labelled["student_acc_top5"] = MulticlassAccuracy(self.num_classes, top_k=5, average="micro")
        label_free = {"agreement": MulticlassAccuracy(self.num_classes, average="micro"), **(label_free_extra or {})}
        return nn.ModuleDict(
            {
                "labelled": MetricCollection(labelled, prefix=prefix),
                "label_free": MetricCollection(label_free, prefix=prefix),
            }
        )

    # ------------------------------------------------------------------ forward passes

    def _split(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        return split_batch(batch, self.input_key, self.label_key)

    def _teacher_forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher's ``(feature, logits)`` without autograd."""
        with torch.no_grad():
            return _forward_with_tap(self.teacher, self.teacher_tap, inputs)

    def _teacher_outputs(self, batch: Any, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher's ``(feature, logits)``, read from a ``TeacherOutputCache`` batch or computed."""
        if isinstance(batch, Mapping) and TEACHER_LOGITS in batch:
            if not self._cache_key_checked:
                self._check_cache_key(batch[TEACHER_KEY])
            return batch[TEACHER_FEATURES], batch[TEACHER_LOGITS]
        return self._teacher_forward(inputs)

    def _check_cache_key(self, keys: Tensor) -> None:
        expected = teacher_cache_key(self._teacher_fingerprint(), self.teacher_tap.tap)
        if not bool((keys == expected).all()):
            raise ValueError(
                "the batch carries cached teacher outputs of a different teacher or feature tap than this module's: "
                "rebuild the TeacherOutputCache with this module's teacher and teacher_tap"
            )
        self._cache_key_checked = True

    def _teacher_fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = teacher_fingerprint(self.teacher)
        return self._fingerprint

    @override
    def on_train_epoch_start(self) -> None:
        self._cache_key_checked = False  # a new epoch may come from another dataloader

    def _student_forward_raw(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Student's ``(feature, logits)`` from one forward pass."""
        return _forward_with_tap(self.student, self.student_tap, inputs)

    def _update_classification_metrics(
        self, metrics: nn.ModuleDict, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None
    ) -> None:
        prefix = metrics["label_free"].prefix
        metrics["label_free"][f"{prefix}agreement"].update(student_logits, teacher_logits.argmax(dim=1))
        if labels is not None:
            for name, metric in metrics["labelled"].items():
                metric.update(teacher_logits if "teacher" in name else student_logits, labels)
            self.log_dict(metrics["labelled"], on_step=False, on_epoch=True)

    @override
    def forward(self, inputs: Tensor) -> Any:
        """The student's prediction (what the trained model is for)."""
        return self.student(inputs)

    @override
    def train(self, mode: bool = True) -> TeacherStudentModule:
        super().train(mode)
        self.teacher.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    # ------------------------------------------------------------------ checkpoints

    def _extra_checkpoint_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        return None

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.include_teacher_in_checkpoint:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
                del state[key]
        checkpoint[CHECKPOINT_KEY] = {
            "teacher_fingerprint": self._teacher_fingerprint(),
            "rng": get_rng_state() if self.restore_rng_state else None,
            **self._extra_checkpoint_state(),
        }

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            raise ValueError(
                f"this checkpoint was not written by {type(self).__name__} (no {CHECKPOINT_KEY!r} entry); to start "
                "from a supervised checkpoint, load its weights into the network before building the module"
            )
        state = checkpoint["state_dict"]
        if not any(k.startswith(TEACHER_PREFIX) for k in state):
            fingerprint = teacher_fingerprint(self.teacher)
            if fingerprint != saved["teacher_fingerprint"]:
                raise ValueError(
                    "the teacher passed to this module is not the one the checkpoint was trained with (teacher "
                    "fingerprints differ). Checkpoints leave the teacher out: rebuild the same teacher, with the same "
                    "weights, and pass it as teacher=..."
                )
            state.update({TEACHER_PREFIX + k: v for k, v in self.teacher.state_dict().items()})
            self._fingerprint = fingerprint
        self._load_extra_checkpoint_state(saved)
        if saved.get("rng") is not None and self.restore_rng_state:
            self._rng_state_to_restore = saved["rng"]  # applied when a fit resumes, never on a plain load

    @override
    def on_fit_start(self) -> None:
        # After the checkpoint is restored, before the first data iterator is made: only a resumed fit reseeds.
        if self._rng_state_to_restore is not None and self.trainer.ckpt_path is not None:
            set_rng_state(self._rng_state_to_restore)
        self._rng_state_to_restore = None

    # ------------------------------------------------------------------ export

    def export_student(self) -> nn.Module:
        """A standalone copy of the trained student in eval mode.

        Feature taps hook the student only while features are read, so the copy carries no hook and references no
        class of ``lightning_advkd`` (unless the student's own architecture does): it can be pickled, traced or
        exported and used without this package.
        """
        return copy.deepcopy(self.student).eval()


def _forward_with_tap(model: nn.Module, tap: FeatureTap, inputs: Tensor) -> tuple[Tensor, Tensor]:
    with tap.capture():
        output = model(inputs)
    logits = first_tensor(output)
    if logits is None:
        raise FeatureTapError(f"{tap.role} returned no tensor from forward; it must return logits")
    return tap.pop(), logits


def _check_networks(teacher: nn.Module | None, student: nn.Module | None) -> None:
    for role, network in (("teacher", teacher), ("student", student)):
        if network is None:
            raise ValueError(
                f"a distillation module needs a {role} network. Checkpoints leave the frozen teacher out, so "
                f"load_from_checkpoint(path, teacher=..., student=...) must be given both networks again."
            )
        if not isinstance(network, nn.Module):
            raise TypeError(f"{role} must be a torch.nn.Module, got {type(network).__name__}")
    if teacher is student:
        raise ValueError("teacher and student are the same module object: pass two different networks")


def _class_count(logits: Tensor) -> int | None:
    return logits.shape[1] if logits.dim() == 2 else None
