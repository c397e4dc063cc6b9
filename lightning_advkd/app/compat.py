"""Checks that a teacher-student pair, a dataset and a method fit together, run before anything trains.

A pair config declares the input its architectures were made for (``input_size: [C, H, W]``) and, for teachers that
come with a fixed classifier (ImageNet checkpoints), ``num_classes``. A mismatch with the dataset would otherwise
surface deep inside the first forward pass, or, worse, after the teacher has trained for an hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.utils import get_object

from lightning_advkd.models import is_model
from lightning_advkd.supervised import SupervisedClassifier


class IncompatibleConfigError(ValueError):
    """The pair, the dataset and the method of a run do not fit together."""


@dataclass(frozen=True)
class DatasetShape:
    """What a datamodule yields: channels, square image side, and the number of classes (``None``: unlabeled).

    Args:
        name: The dataset's config name, for messages.
        in_chans: Channels of the images.
        image_size: Side of the square images.
        num_classes: Number of classes of its labels, or ``None`` when it has none.
    """

    name: str
    in_chans: int
    image_size: int
    num_classes: int | None

    @classmethod
    def of(cls, name: str, datamodule: Any) -> DatasetShape:
        """Read the shape off a datamodule's ``in_chans``, ``image_size`` and ``num_classes`` attributes."""
        return cls(name, int(datamodule.in_chans), int(datamodule.image_size), datamodule.num_classes)


def _model_name(node: Mapping[str, Any]) -> str | None:
    return node.get("model", {}).get("name") if isinstance(node.get("model"), Mapping) else None


def check_compatibility(
    pair: Mapping[str, Any],
    dataset: DatasetShape,
    method: Mapping[str, Any],
    task: str,
    other_pairs: Mapping[str, Sequence[int]] | None = None,
) -> None:
    """Raise :class:`IncompatibleConfigError` listing every problem, each with its fix, before any training.

    Args:
        pair: The resolved ``pair`` config node (``name``, ``input_size``, ``num_classes``, ``teacher``, ``student``,
            ``attention_pairs``).
        dataset: What the dataset yields.
        method: The resolved ``method`` config node (``name``, ``module``: the module's ``_target_`` node).
        task: ``distill``, ``teacher`` or ``evaluate``.
        other_pairs: Input sizes of the other pair configs, by name, to suggest the ones that fit the dataset.

    Raises:
        IncompatibleConfigError: Naming the pair, the dataset and each mismatch.

    Example:
        >>> fmnist = DatasetShape("fashion_mnist", 1, 28, 10)
        >>> pair = {"name": "resnet164_resnet20", "input_size": [3, 32, 32], "teacher": {}, "student": {}}
        >>> try:
        ...     check_compatibility(pair, fmnist, {"name": "anc", "module": {}}, "distill")
        ... except IncompatibleConfigError as err:
        ...     print(err)
        pair 'resnet164_resnet20' does not fit dataset 'fashion_mnist':
          - the pair expects 3-channel inputs, the dataset yields 1-channel images
          - the pair expects 32x32 inputs, the dataset yields 28x28 images
    """
    name = pair.get("name", "?")
    problems: list[str] = []
    input_size = pair.get("input_size")
    if input_size is not None:
        channels, height, width = (int(v) for v in input_size)
        if channels != dataset.in_chans:
            problems.append(
                f"the pair expects {channels}-channel inputs, the dataset yields {dataset.in_chans}-channel images"
            )
        if (height, width) != (dataset.image_size, dataset.image_size):
            problems.append(
                f"the pair expects {height}x{width} inputs, the dataset yields {dataset.image_size}x"
                f"{dataset.image_size} images"
            )
    pair_classes = pair.get("num_classes")
    if pair_classes is not None and dataset.num_classes is not None and int(pair_classes) != dataset.num_classes:
        problems.append(
            f"the pair's networks have {pair_classes} classes, the dataset has {dataset.num_classes}: set "
            f"pair.num_classes=null to build them for the dataset (a teacher checkpoint must then have "
            f"{dataset.num_classes} classes too)"
        )
    teacher_checkpoint = pair.get("teacher", {}).get("checkpoint")
    if dataset.num_classes is None:
        if pair_classes is None:
            problems.append(
                "the dataset has no labels, so the number of classes must come from the pair: set pair.num_classes"
            )
        if teacher_checkpoint is None:
            problems.append(
                "the dataset has no labels, so a teacher cannot be trained on it: set pair.teacher.checkpoint to a "
                "trained teacher"
            )
        if needs_labels(method.get("module") or {}) or task == "teacher":
            problems.append(f"method '{method.get('name')}' / task '{task}' needs labels, which the dataset lacks")
    for role in ("teacher", "student"):
        arch = _model_name(pair.get(role, {}))
        if arch is not None and not is_model(arch):
            problems.append(
                f"{role} architecture {arch!r} is not a known model (lightning_advkd.models.list_models(); "
                "torchvision as 'tv_<name>', timm as 'timm.<name>')"
            )
    if (method.get("module") or {}).get("attention_weight") and not pair.get("attention_pairs"):
        problems.append(
            f"method '{method.get('name')}' needs pair.attention_pairs: [[student layer, teacher layer], ...]"
        )
    if not problems:
        return
    message = f"pair {name!r} does not fit dataset {dataset.name!r}:\n" + "\n".join(f"  - {p}" for p in problems)
    fitting = _fitting_pairs(dataset, other_pairs or {})
    if fitting and any("inputs" in p for p in problems):
        message += f"\n  pairs made for {dataset.in_chans}x{dataset.image_size}x{dataset.image_size} inputs: " + (
            ", ".join(fitting)
        )
    raise IncompatibleConfigError(message)


def needs_labels(module: Mapping[str, Any]) -> bool:
    """Whether a method's module node trains on labels: a supervised classifier, or a label term with weight > 0.

    Example:
        >>> needs_labels({"_target_": "lightning_advkd.app.methods.StudentAlone.from_pair"})
        True
        >>> needs_labels({"_target_": "lightning_advkd.distillation.KnowledgeDistillation", "label_weight": 0.0})
        False
    """
    target = module.get("_target_")
    built = get_object(target) if target else None
    owner = getattr(built, "__self__", built)  # a classmethod's class
    supervised = isinstance(owner, type) and issubclass(owner, SupervisedClassifier)
    return supervised or float(module.get("label_weight") or 0) > 0


def _fitting_pairs(dataset: DatasetShape, pairs: Mapping[str, Sequence[int] | None]) -> list[str]:
    shape = [dataset.in_chans, dataset.image_size, dataset.image_size]
    return sorted(name for name, size in pairs.items() if size is not None and [int(v) for v in size] == shape)


__all__ = ["DatasetShape", "IncompatibleConfigError", "check_compatibility", "needs_labels"]
