"""What every teacher-student LightningModule of this package shares.

A frozen teacher (:class:`~lightning_advkd.teacher.FrozenTeacher`); feature taps on both networks and their logits
read by :func:`~lightning_advkd.outputs.read_logits`; the class count and the feature widths discovered at
construction; the evaluation metrics (:class:`~lightning_advkd.metrics.EvaluationMetrics`); early checks of the
data (:mod:`lightning_advkd.guards`); checkpoints that leave the teacher out and carry the random generators' state;
export of the student.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_advkd import guards
from lightning_advkd._rng import get_rng_state, set_rng_state
from lightning_advkd.batch import split_batch
from lightning_advkd.features import (
    FeatureTap,
    FeatureTapError,
    LinearOutputs,
    static_feature_width,
    static_num_classes,
)
from lightning_advkd.metrics import EvaluationMetrics
from lightning_advkd.outputs import OutputSpec, read_logits
from lightning_advkd.teacher import CHECKPOINT_KEY, TEACHER_PREFIX, FrozenTeacher
from lightning_advkd.teacher_cache import TEACHER_FEATURES, TEACHER_KEY, TEACHER_LOGITS, teacher_cache_key


class TeacherStudentModule(L.LightningModule):
    """Base class of the distillation modules; see :class:`~lightning_advkd.AdversarialDistillation` for the args.

    Subclasses call ``super().__init__`` with the shared arguments, then ``save_hyperparameters``, and extend
    :meth:`_extra_checkpoint_state` / :meth:`_load_extra_checkpoint_state` for their own counters.

    Args:
        teacher: the frozen teacher.
        student: the network to train.
        teacher_tap: where the teacher's feature is read; default: the input of the ``nn.Linear`` producing its
            logits.
        student_tap: the same for the student.
        input_shape: shape of one input; when given, both networks run once at construction.
        num_classes: class count for the metrics; default: read off the teacher.
        teacher_output: where the teacher's logits are in its output (see :mod:`lightning_advkd.outputs`).
        student_output: the same for the student.
        logit_term_on: whether a loss compares logits (then the class counts must agree).
        input_key: key of the input in dict batches.
        label_key: key of the labels in dict batches.
        include_teacher_in_checkpoint: keep the teacher's weights in checkpoints.
        restore_rng_state: store and restore the random generators' state in checkpoints.
        discriminator_metrics: measure a discriminator's accuracy too.
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
        teacher_output: OutputSpec = None,
        student_output: OutputSpec = None,
        logit_term_on: bool = True,
        input_key: str = "image",
        label_key: str = "label",
        include_teacher_in_checkpoint: bool = False,
        restore_rng_state: bool = True,
        discriminator_metrics: bool = False,
    ) -> None:
        super().__init__()
        _check_networks(teacher, student)
        assert teacher is not None and student is not None  # _check_networks raised otherwise
        self.frozen_teacher = FrozenTeacher(teacher)
        self.teacher = self.frozen_teacher.network
        self.student = student
        self.output_specs = {"teacher": teacher_output, "student": student_output}
        example = torch.zeros(2, *input_shape) if input_shape is not None else None
        self.teacher_tap = FeatureTap(self.teacher, teacher_tap or self._logits_tap("teacher", example), "teacher")
        self.student_tap = FeatureTap(self.student, student_tap or self._logits_tap("student", example), "student")
        self._taps_to_verify = {
            role: tap is None and example is None for role, tap in (("teacher", teacher_tap), ("student", student_tap))
        }
        self.input_key, self.label_key = input_key, label_key
        self.include_teacher_in_checkpoint = include_teacher_in_checkpoint
        self.restore_rng_state = restore_rng_state
        teacher_width, student_width, teacher_classes, student_classes = self._discover_shapes(example)
        self.feature_widths = (teacher_width, student_width)
        if logit_term_on and None not in (teacher_classes, student_classes) and teacher_classes != student_classes:
            raise ValueError(
                f"teacher predicts {teacher_classes} classes but student {student_classes}, and a loss term compares "
                f"their logits: build the student with num_classes={teacher_classes}, or turn the logit term off"
                + ("" if example is not None else " (counts read off the last registered nn.Linear: pass input_shape= "
                   "to read them from a forward pass)")
            )  # fmt: skip
        classes = num_classes or teacher_classes or student_classes
        if classes is None:
            raise ValueError("cannot tell the number of classes: pass num_classes= or input_shape=")
        self.num_classes = classes
        self.val_metrics = EvaluationMetrics(self.num_classes, "val/", discriminator=discriminator_metrics)
        self.test_metrics = EvaluationMetrics(self.num_classes, "test/", discriminator=discriminator_metrics)
        self._channels = guards.expected_channels(input_shape, self.teacher, self.student)
        self._first_batch_checked = False
        self._nonfinite_inputs = guards.NonFiniteInputWarning()
        self._missing_labels_reported = False
        self._rng_state_to_restore: dict[str, Any] | None = None
        self._cache_key_checked = False

    # ------------------------------------------------------------------ construction

    def _network(self, role: str) -> nn.Module:
        return self.teacher if role == "teacher" else self.student

    def _logits_tap(self, role: str, example: Tensor | None) -> str | None:
        """The default tap, the input of the ``nn.Linear`` that produces the logits, found in a forward pass."""
        if example is None:
            return None
        network, recorder = self._network(role), LinearOutputs()
        was_training = network.training
        with torch.no_grad(), recorder.capture(network):
            logits = self._logits(role, network.eval()(example))
        network.train(was_training)
        name = recorder.producer(logits)
        return None if name is None else name + ":input"

    def _logits(self, role: str, output: Any) -> Tensor:
        return read_logits(output, self.output_specs[role], role)

    def _discover_shapes(self, example: Tensor | None) -> tuple[int, int, int | None, int | None]:
        """Feature widths and class counts, read off Linear layers or, with an example input, from one forward pass."""
        if example is not None:
            was_training = self.student.training
            self.student.eval()
            with torch.no_grad():
                teacher_features, teacher_logits = self._forward("teacher", example)
                student_features, student_logits = self._forward("student", example)
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

    # ------------------------------------------------------------------ forward passes

    def _split(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        inputs, labels = split_batch(batch, self.input_key, self.label_key)
        if not self._first_batch_checked:
            guards.check_first_batch(inputs, self._channels, type(self).__name__)
            self._first_batch_checked = True
        return inputs, labels

    def _split_for_evaluation(self, batch: Any, batch_idx: int, stage: str) -> tuple[Tensor, Tensor | None]:
        """Inputs and labels of an evaluation batch; NaN inputs and a dict without the label key are reported once."""
        inputs, labels = self._split(batch)
        self._nonfinite_inputs.check(inputs, batch_idx, stage)
        if labels is None and isinstance(batch, Mapping) and not self._missing_labels_reported:
            self._missing_labels_reported = True
            rank_zero_warn(
                f"{stage} batches are dicts without the label key {self.label_key!r} (keys: {sorted(batch)}): "
                "student_acc and teacher_acc are not measured. Set label_key= to the key that holds the labels "
                "(ignore this for label-free data)"
            )
        return inputs, labels

    def _forward(self, role: str, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """One network's ``(feature, logits)`` from one forward pass (the first batch also checks the default tap)."""
        network, tap = self._network(role), self.teacher_tap if role == "teacher" else self.student_tap
        recorder = LinearOutputs() if self._taps_to_verify[role] else None
        with tap.capture():
            if recorder is None:
                logits = self._logits(role, network(inputs))
            else:
                with recorder.capture(network):
                    logits = self._logits(role, network(inputs))
        if recorder is not None:
            self._taps_to_verify[role] = False
            producer = recorder.producer(logits)
            if producer is not None and producer + ":input" != tap.tap:
                raise FeatureTapError(
                    f"the {role}'s logits come from layer {producer!r}, not from {tap.tap.split(':')[0]!r}, the last "
                    f"registered nn.Linear that the default tap assumed. Pass input_shape= (the module then finds "
                    f"the layer itself) or {role}_tap='{producer}:input'"
                )
        return tap.pop(), logits

    def _teacher_forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher's ``(feature, logits)`` without autograd."""
        with torch.no_grad():
            return self._forward("teacher", inputs)

    def _teacher_outputs(self, batch: Any, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher's ``(feature, logits)``, read from a ``TeacherOutputCache`` batch or computed."""
        if isinstance(batch, Mapping) and TEACHER_LOGITS in batch:
            if not self._cache_key_checked:
                self._check_cache_key(batch[TEACHER_KEY])
            return batch[TEACHER_FEATURES], batch[TEACHER_LOGITS]
        return self._teacher_forward(inputs)

    def _check_cache_key(self, keys: Tensor) -> None:
        expected = teacher_cache_key(self.frozen_teacher.fingerprint(), self.teacher_tap.tap)
        if not bool((keys == expected).all()):
            raise ValueError(
                "the batch carries cached teacher outputs of a different teacher or feature tap than this module's: "
                "rebuild the TeacherOutputCache with this module's teacher and teacher_tap"
            )
        self._cache_key_checked = True

    def _student_forward_raw(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Student's ``(feature, logits)`` from one forward pass."""
        return self._forward("student", inputs)

    @torch.no_grad()
    def features(self, batch: Any) -> tuple[Tensor, Tensor]:
        """The teacher's and the student's feature vectors for a batch, without autograd.

        Subclasses with a discriminator return the vectors it judges (``AdversarialDistillation.features``).

        Args:
            batch: a batch as the module's loaders give it (a tensor, a tuple or a dict, cached or not).

        Returns:
            ``(teacher, student)``: the teacher's tapped feature, ``(N, C_T)``, and the student's tapped feature
            through the module's ``adapter`` when it has one (``(N, C_S)`` otherwise).
        """
        inputs, _ = self._split(batch)
        teacher_features, _ = self._teacher_outputs(batch, inputs)
        student_features, _ = self._student_forward_raw(inputs)
        adapter = getattr(self, "adapter", None)
        return teacher_features, adapter(student_features) if adapter is not None else student_features

    def _log_metrics(self, metrics: EvaluationMetrics, labelled: bool) -> None:
        for collection in metrics.collections(labelled):
            self.log_dict(collection, on_step=False, on_epoch=True)

    @override
    def forward(self, inputs: Tensor) -> Any:
        """The student's prediction (what the trained model is for)."""
        return self.student(inputs)

    @override
    def train(self, mode: bool = True) -> TeacherStudentModule:
        super().train(mode)
        self.frozen_teacher.lock()
        return self

    # ------------------------------------------------------------------ fit hooks

    @override
    def on_fit_start(self) -> None:
        # After the checkpoint is restored, before the first data iterator is made: only a resumed fit reseeds.
        if self._rng_state_to_restore is not None and self.trainer.ckpt_path is not None:
            set_rng_state(self._rng_state_to_restore)
        self._rng_state_to_restore = None

    @override
    def on_fit_end(self) -> None:
        # Lightning skips the whole training loop (and its hooks) when there is no batch, then ends the fit normally.
        guards.check_training_set(self.trainer)

    @override
    def on_train_epoch_start(self) -> None:
        self._cache_key_checked = False  # a new epoch may come from another dataloader

    # ------------------------------------------------------------------ checkpoints

    def _extra_checkpoint_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        return None

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.include_teacher_in_checkpoint:
            self.frozen_teacher.strip(checkpoint["state_dict"])
        checkpoint[CHECKPOINT_KEY] = {
            "teacher_fingerprint": self.frozen_teacher.fingerprint(),
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
        self.frozen_teacher.restore(checkpoint["state_dict"], saved["teacher_fingerprint"])
        self._load_extra_checkpoint_state(saved)
        if saved.get("rng") is not None and self.restore_rng_state:
            self._rng_state_to_restore = saved["rng"]  # applied when a fit resumes, never on a plain load

    # ------------------------------------------------------------------ export

    def export_student(self) -> nn.Module:
        """A standalone copy of the trained student in eval mode.

        Feature taps hook the student only while features are read, so the copy carries no hook and references no
        class of ``lightning_advkd`` (unless the student's own architecture does): it can be pickled, traced or
        exported and used without this package.
        """
        return copy.deepcopy(self.student).eval()


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


__all__ = ["CHECKPOINT_KEY", "TEACHER_PREFIX", "TeacherStudentModule"]
