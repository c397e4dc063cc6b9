"""Getting the trained student out of a distillation checkpoint, for use without this package."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

STUDENT_PREFIX = "student."


def load_student_state_dict(checkpoint_path: str | Path) -> dict[str, Tensor]:
    """Read the student's weights from an :class:`~lightning_advkd.AdversarialDistillation` checkpoint.

    The result is a plain ``state_dict`` for the student architecture (``student.load_state_dict(...)``); no teacher,
    discriminator or Lightning object is needed.

    Raises:
        FileNotFoundError: if the file does not exist.
        KeyError: if the checkpoint holds no student weights.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint)
    student = {k[len(STUDENT_PREFIX) :]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    if not student:
        raise KeyError(f"{path} holds no 'student.*' weights: is it an AdversarialDistillation checkpoint?")
    return student
