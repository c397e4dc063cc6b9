"""Training with labels: the teachers, and the "student trained alone" baseline the distillation methods must beat."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR
from typing_extensions import override

from lightning_advkd import guards
from lightning_advkd.batch import split_batch
from lightning_advkd.metrics import EvaluationMetrics
from lightning_advkd.objective import StudentObjective, total
from lightning_advkd.outputs import OutputSpec, read_logits
from lightning_advkd.teacher import CHECKPOINT_KEY, FrozenTeacher

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], "LRScheduler | Mapping[str, Any]"]

#: Prefix of the wrapped network's keys in a checkpoint's ``state_dict``; the distillation module and the model
#: registry strip it to load a teacher.
MODEL_PREFIX = "model."
#: Deprecated metric names, still logged next to the shared ones (``val/student_acc``, ...) for one release.
DEPRECATED_METRIC_NAMES = {
    "student_acc": "acc",
    "student_acc_top5": "acc_top5",
}
#: The community recipe's milestones (150, 180, 210 of 240 epochs) as fractions of the run.
DEFAULT_MILESTONES = (0.625, 0.75, 0.875)


def _milestone_kind(milestones: Sequence[float]) -> str:
    """``"epochs"`` for ints >= 0, ``"fractions"`` for floats in (0, 1), ``"none"`` for an empty sequence.

    Raises:
        ValueError: On a mix, bools, negative epochs, fractions outside (0, 1), or an unsorted sequence.
    """
    if len(milestones) == 0:
        return "none"
    if any(isinstance(m, bool) or not isinstance(m, numbers.Real) for m in milestones):
        raise ValueError(f"milestones must be numbers, got {list(milestones)}")
    if all(isinstance(m, numbers.Integral) for m in milestones):
        kind = "epochs"
    elif all(not isinstance(m, numbers.Integral) and 0.0 < m < 1.0 for m in milestones):
        kind = "fractions"
    else:
        raise ValueError(
            f"milestones must be all ints (epochs, e.g. [150, 180, 210]) or all floats in (0, 1) (fractions of the "
            f"run, e.g. [0.625, 0.75, 0.875]), got {list(milestones)}"
        )
    if list(milestones) != sorted(milestones):
        raise ValueError(f"milestones must be in increasing order, got {list(milestones)}")
    if kind == "epochs" and milestones[0] < 0:
        raise ValueError(f"milestones in epochs must be >= 0, got {list(milestones)}")
    return kind


class SupervisedClassifier(L.LightningModule):
    """Cross-entropy training of any classifier ``nn.Module``: teachers and the with-labels student baseline.

    The defaults are the knowledge-distillation community's CIFAR recipe (CRD/RepDistiller): SGD with lr 0.05,
    momentum 0.9, weight decay 5e-4 (on every parameter), no Nesterov, learning rate x0.1 at epochs 150, 180 and 210
    of 240. The milestones are given as fractions of the run, (0.625, 0.75, 0.875), turned into optimizer steps from
    ``trainer.estimated_stepping_batches``: a 240-epoch run decays at exactly those epochs, and a short run (a smoke
    test, ``max_steps``) decays at the same relative points instead of never. Int milestones are epochs, as in the
    papers; ``milestones=()`` keeps the learning rate constant. ``optimizer`` and ``scheduler`` factories (e.g.
    Hydra ``_partial_: true`` nodes) replace the default SGD and schedule entirely.

    Metrics: the names every module of the package logs (:class:`~lightning_advkd.metrics.EvaluationMetrics`):
    ``train/loss`` (each step), ``train/student_acc`` (epoch), ``val/loss``, ``val/student_acc``,
    ``val/student_acc_top5`` (above 5 classes), the same under ``test/``; with a reference ``teacher`` also
    ``val/teacher_acc``, ``val/agreement`` (and ``test/...``). The former names ``<stage>/acc`` and
    ``<stage>/acc_top5`` are still logged, deprecated. The loss is the package's student objective with only its
    label term (:class:`~lightning_advkd.objective.StudentObjective`).

    The network is stored as ``self.model``, so the checkpoint's ``state_dict`` holds exactly ``model.<name>`` keys
    (torchmetrics states are not persistent): :func:`load_model_from_checkpoint` and the distillation module load a
    teacher by stripping ``model.``. ``save_hyperparameters`` leaves out ``model`` (pass it again to
    ``load_from_checkpoint``) and the two factories, which may be lambdas that a checkpoint cannot pickle.

    Args:
        model: Network mapping images to logits of shape ``(B, num_classes)`` (or an output they are read from, see
            ``output``).
        num_classes: Number of classes (sizes the accuracy metrics).
        label_smoothing: Label smoothing of the cross-entropy, in [0, 1).
        optimizer: Factory ``params -> Optimizer``; replaces the SGD built from ``lr``, ``momentum``,
            ``weight_decay`` and ``nesterov``.
        scheduler: Factory ``optimizer -> LRScheduler`` (or a Lightning scheduler-config dict); replaces the
            multi-step schedule built from ``milestones`` and ``gamma``.
        lr: Learning rate of the default SGD.
        momentum: Momentum of the default SGD.
        weight_decay: Weight decay of the default SGD.
        nesterov: Nesterov momentum for the default SGD.
        milestones: Decay points of the default schedule: ints are epochs, floats in (0, 1) fractions of the run.
        gamma: Decay factor at each milestone.
        scheduler_interval: ``"epoch"`` or ``"step"``: when Lightning steps a ``scheduler`` from the factory.
        channels_last: Run the model in channels-last memory format (1.3-1.8x faster convolutions on CPU).
        teacher: A reference teacher, frozen and never trained against: only measured (``teacher_acc``,
            ``agreement``), so the baseline reports what the distillation modules report. Left out of checkpoints.
        output: Where the logits are in the model's output (:mod:`lightning_advkd.outputs`): a key, an index or a
            callable.

    Raises:
        ValueError: On ``num_classes`` < 1, ``label_smoothing`` outside [0, 1), a non-positive ``lr``, malformed
            ``milestones`` or an unknown ``scheduler_interval``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
        >>> module = SupervisedClassifier(net, num_classes=10, milestones=(0.5,))
        >>> module(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        label_smoothing: float = 0.0,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        milestones: Sequence[float] = DEFAULT_MILESTONES,
        gamma: float = 0.1,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        teacher: nn.Module | None = None,
        output: OutputSpec = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.objective = StudentObjective(kd_weight=0.0, label_weight=1.0, label_smoothing=label_smoothing)
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self._milestone_kind = _milestone_kind(milestones)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler", "teacher", "output"])
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.output_spec = output
        self.frozen_teacher = FrozenTeacher(teacher) if teacher is not None else None
        self.teacher = teacher
        self.train_metrics = EvaluationMetrics(num_classes, "train/", teacher=False)  # the teacher runs in eval only
        self.val_metrics = EvaluationMetrics(num_classes, "val/", teacher=teacher is not None)
        self.test_metrics = EvaluationMetrics(num_classes, "test/", teacher=teacher is not None)
        self._channels = guards.expected_channels(None, model)
        self._first_batch_checked = False
        self._nonfinite_inputs = guards.NonFiniteInputWarning()

    @classmethod
    def from_pair(
        cls,
        teacher: nn.Module | None,
        student: nn.Module,
        *,
        num_classes: int,
        input_shape: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> SupervisedClassifier:
        """The student trained alone with labels, built from the arguments every method of the app gets.

        ``teacher`` is only measured (see ``teacher``); ``input_shape`` is not needed.

        Example:
            >>> student = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
            >>> module = SupervisedClassifier.from_pair(nn.Linear(4, 3), student, num_classes=3, input_shape=[4])
            >>> module.model is student, module.teacher.training
            (True, False)
        """
        del input_shape
        return cls(student, num_classes, teacher=teacher, **kwargs)

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        return read_logits(self.model(images), self.output_spec, "model", "output")

    def _split(self, batch: Any, batch_idx: int, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = split_batch(batch)
        if not self._first_batch_checked:
            guards.check_first_batch(images, self._channels, type(self).__name__)
            self._first_batch_checked = True
        if labels is None:
            raise ValueError(
                f"SupervisedClassifier trains and evaluates with labels, but {stage} batch {batch_idx} has none: give "
                "(images, labels) batches (a labelled dataset), or use a label-free method such as "
                "AdversarialDistillation or KnowledgeDistillation for unlabelled data"
            )
        if stage != "train":
            self._nonfinite_inputs.check(images, batch_idx, stage)
        return images, labels

    def _step(self, batch: Any, batch_idx: int, stage: str) -> torch.Tensor:
        images, labels = self._split(batch, batch_idx, stage)
        logits = self(images)
        loss = total(self.objective.terms(logits, labels=labels))
        teacher_logits = None
        if self.teacher is not None and stage != "train":
            with torch.no_grad():
                teacher_logits = read_logits(self.teacher(images), None, "teacher")
        metrics = {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[stage]
        metrics.update(logits, teacher_logits, labels=labels)
        for collection in metrics.collections(labelled=True):
            self.log_dict(collection, on_step=False, on_epoch=True)
        for name, metric in metrics.labelled.items(keep_base=True):
            if name in DEPRECATED_METRIC_NAMES:
                self.log(f"{stage}/{DEPRECATED_METRIC_NAMES[name]}", metric, on_step=False, on_epoch=True)
        return loss

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, batch_idx, "train")
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self._step(batch, batch_idx, "val"), sync_dist=True)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test/loss", self._step(batch, batch_idx, "test"), sync_dist=True)

    @override
    def on_fit_end(self) -> None:
        # Lightning skips the whole training loop (and its hooks) when there is no batch, then ends the fit normally.
        guards.check_training_set(self.trainer)

    @override
    def train(self, mode: bool = True) -> SupervisedClassifier:
        super().train(mode)
        if self.frozen_teacher is not None:
            self.frozen_teacher.lock()
        return self

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.frozen_teacher is not None:  # the state_dict holds exactly the model.<name> keys, as without one
            self.frozen_teacher.strip(checkpoint["state_dict"])
            checkpoint[CHECKPOINT_KEY] = {"teacher_fingerprint": self.frozen_teacher.fingerprint()}

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.frozen_teacher is not None:
            saved = checkpoint.get(CHECKPOINT_KEY) or {}
            self.frozen_teacher.restore(checkpoint["state_dict"], saved.get("teacher_fingerprint"))

    @override
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(self.model.parameters())
        else:
            optimizer = SGD(
                self.model.parameters(),
                lr=hp["lr"],
                momentum=hp["momentum"],
                weight_decay=hp["weight_decay"],
                nesterov=hp["nesterov"],
            )
        if self.scheduler_factory is not None:
            scheduler = self.scheduler_factory(optimizer)
            config = dict(scheduler) if isinstance(scheduler, Mapping) else {"scheduler": scheduler}
            config.setdefault("interval", hp["scheduler_interval"])
            return {"optimizer": optimizer, "lr_scheduler": config}
        if self._milestone_kind == "none":
            return optimizer
        if self._milestone_kind == "epochs":
            return {"optimizer": optimizer, "lr_scheduler": MultiStepLR(optimizer, list(hp["milestones"]), hp["gamma"])}
        steps = self._milestone_steps(hp["milestones"])
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": MultiStepLR(optimizer, steps, hp["gamma"]), "interval": "step"},
        }

    def _milestone_steps(self, fractions: Sequence[float]) -> list[int]:
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "fractional milestones need a bounded run: set max_epochs or max_steps on the Trainer, "
                "or give milestones in epochs (ints)"
            )
        return [round(f * total) for f in fractions]

    @staticmethod
    def load_model_from_checkpoint(
        path: str | Path, model: nn.Module, *, strict: bool = True, map_location: Any = "cpu"
    ) -> nn.Module:
        """Load a :class:`SupervisedClassifier` checkpoint's weights into ``model``.

        See :func:`load_model_from_checkpoint` for the arguments, the return value and the errors.
        """
        return load_model_from_checkpoint(path, model, strict=strict, map_location=map_location)


def model_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = MODEL_PREFIX) -> dict[str, torch.Tensor]:
    """The wrapped network's weights from a LightningModule ``state_dict``: keys under ``prefix``, prefix removed.

    A ``torch.compile``-d network's ``_orig_mod.`` level is removed too, so the weights load into a plain module.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            name = key[len(prefix) :]
            out[name.removeprefix("_orig_mod.")] = value
    return out


def load_model_from_checkpoint(
    path: str | Path, model: nn.Module, *, strict: bool = True, map_location: Any = "cpu"
) -> nn.Module:
    """Load the network weights of a :class:`SupervisedClassifier` checkpoint into a fresh ``model``.

    Reads the checkpoint with ``weights_only=True`` (no code runs from the file), keeps the ``model.`` keys of its
    ``state_dict`` with the prefix removed, and loads them with ``model.load_state_dict``.

    Args:
        path: A Lightning ``.ckpt`` written while training a :class:`SupervisedClassifier`.
        model: The same architecture, freshly built; loaded in place.
        strict: Passed to ``load_state_dict``: every key must match.
        map_location: Where the tensors are loaded.

    Returns:
        ``model``, with the checkpoint's weights.

    Raises:
        FileNotFoundError: When ``path`` is not a file.
        KeyError: When the checkpoint has no ``state_dict`` or no ``model.`` key in it.
        RuntimeError: From ``load_state_dict`` when ``strict`` and the architecture does not match.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise KeyError(f"{path} is not a Lightning checkpoint: no 'state_dict' entry")
    weights = model_state_dict(checkpoint["state_dict"])
    if not weights:
        sample = list(checkpoint["state_dict"])[:5]
        raise KeyError(f"{path}: no '{MODEL_PREFIX}' keys in the state_dict (found e.g. {sample})")
    model.load_state_dict(weights, strict=strict)
    return model
