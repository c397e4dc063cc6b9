"""The frozen teacher: kept in eval mode without gradients, recognised by a fingerprint, left out of checkpoints.

Every module of the package that holds a teacher (the distillation modules, and the supervised baseline when it is
given one to compare with) stores it as the submodule ``teacher`` and lets :class:`FrozenTeacher` own what follows
from "frozen": the eval lock, the fingerprint, and the checkpoint entries (the ``teacher.`` weights removed on save
and restored from the network the module was built with on load, after checking it is the same teacher).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from torch import Tensor, nn

from lightning_advkd.fingerprint import teacher_fingerprint

#: The package's entry in a Lightning checkpoint (fingerprint, counters, random state).
CHECKPOINT_KEY = "lightning_advkd"
#: Prefix of the teacher's weights in a module's ``state_dict``.
TEACHER_PREFIX = "teacher."


class FrozenTeacher:
    """What a module does with its frozen teacher network.

    Args:
        network: the teacher; frozen in place (``eval()``, ``requires_grad_(False)``).

    Example:
        >>> teacher = FrozenTeacher(nn.Linear(2, 2))
        >>> teacher.network.training, teacher.network.weight.requires_grad
        (False, False)
        >>> state = {"teacher.weight": 1, "student.weight": 2}
        >>> teacher.strip(state)
        >>> state
        {'student.weight': 2}
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network.eval().requires_grad_(False)
        self._fingerprint: str | None = None

    def lock(self) -> None:
        """Put the teacher back in eval mode (after a ``module.train()``): BatchNorm and dropout stay inference-mode."""
        self.network.eval()

    def fingerprint(self) -> str:
        """SHA-256 of the teacher's weights (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = teacher_fingerprint(self.network)
        return self._fingerprint

    @staticmethod
    def strip(state_dict: MutableMapping[str, Any]) -> None:
        """Remove the teacher's weights from a checkpoint's ``state_dict``."""
        for key in [k for k in state_dict if k.startswith(TEACHER_PREFIX)]:
            del state_dict[key]

    def restore(self, state_dict: MutableMapping[str, Tensor], saved_fingerprint: str | None) -> None:
        """Put this teacher's weights back into a checkpoint's ``state_dict`` that has none.

        First checks that it is the teacher the checkpoint was trained with.

        Raises:
            ValueError: when the fingerprints differ.
        """
        if any(k.startswith(TEACHER_PREFIX) for k in state_dict):
            return
        self._fingerprint = None  # the weights may have been replaced since construction
        if saved_fingerprint is not None and self.fingerprint() != saved_fingerprint:
            raise ValueError(
                "the teacher passed to this module is not the one the checkpoint was trained with (teacher "
                "fingerprints differ). Checkpoints leave the teacher out: rebuild the same teacher, with the same "
                "weights, and pass it as teacher=..."
            )
        state_dict.update({TEACHER_PREFIX + k: v for k, v in self.network.state_dict().items()})


__all__ = ["CHECKPOINT_KEY", "TEACHER_PREFIX", "FrozenTeacher"]
