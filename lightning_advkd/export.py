"""Getting the trained student out of a distillation checkpoint, for use without this package."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from lightning_advkd.models._checkpoint import read_checkpoint

STUDENT_PREFIX = "student."


def load_student_state_dict(checkpoint_path: str | Path) -> dict[str, Tensor]:
    """Read the student's weights from an :class:`~lightning_advkd.AdversarialDistillation` checkpoint.

    The result is a plain ``state_dict`` for the student architecture (``student.load_state_dict(...)``); no teacher,
    discriminator or Lightning object is needed. The file is read with ``torch.load(weights_only=True)``: a checkpoint
    that would need arbitrary unpickling is refused and runs no code (see
    :func:`lightning_advkd.models.read_checkpoint`).

    Raises:
        FileNotFoundError: if the file does not exist.
        pickle.UnpicklingError: if the file needs unsafe unpickling; the message names the file and the fix.
        ValueError: if the file is damaged (truncated, not a checkpoint); the message names the file.
        KeyError: if the checkpoint holds no student weights.
    """
    path = Path(checkpoint_path)
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    student = {k[len(STUDENT_PREFIX) :]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    if not student:
        raise KeyError(f"{path} holds no 'student.*' weights: is it an AdversarialDistillation checkpoint?")
    return student
