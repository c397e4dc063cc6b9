"""The supervised baseline built like every distillation method, so the entry point instantiates them all one way.

Every ``method.module`` node is instantiated with the same four arguments (``teacher``, ``student``, ``num_classes``,
``input_shape``). The distillation modules take them as they are; the student trained alone with labels is a
:class:`~lightning_advkd.supervised.SupervisedClassifier` of the student, built by :meth:`StudentAlone.from_pair`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from typing_extensions import override

from lightning_advkd.supervised import SupervisedClassifier

#: The supervised classifier's accuracy names -> the names the distillation modules log for the student.
STUDENT_NAMES = {
    "val/acc": "val/student_acc",
    "val/acc_top5": "val/student_acc_top5",
    "test/acc": "test/student_acc",
    "test/acc_top5": "test/student_acc_top5",
}


class StudentAlone(SupervisedClassifier):
    """The student trained alone with labels, logging its accuracies under the distillation modules' names.

    ``val/student_acc`` and ``test/student_acc`` (and ``_top5``) instead of ``val/acc`` and ``test/acc``, so one
    checkpoint monitor, one sweep objective and one summary read every method. Everything else is
    :class:`~lightning_advkd.supervised.SupervisedClassifier`.

    Example:
        >>> student = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> module = StudentAlone.from_pair(nn.Linear(4, 3), student, num_classes=3, input_shape=[4])
        >>> module.model is student
        True
    """

    @classmethod
    def from_pair(
        cls,
        teacher: nn.Module | None,
        student: nn.Module,
        *,
        num_classes: int,
        input_shape: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> StudentAlone:
        """Build it from the arguments every method gets; ``teacher`` and ``input_shape`` are not used.

        A classmethod rather than an ``__init__`` taking the teacher: ``save_hyperparameters`` reads the locals of
        every ``__init__`` in the chain, and the networks must not end up in the checkpoint's hyper-parameters.
        """
        del teacher, input_shape  # trained against the labels only; the app measures the teacher after the test
        return cls(student, num_classes, **kwargs)

    @override
    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        super().log(STUDENT_NAMES.get(name, name), value, *args, **kwargs)


__all__ = ["STUDENT_NAMES", "StudentAlone"]
