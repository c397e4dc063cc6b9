"""A fingerprint of a network's weights, to recognise the teacher a checkpoint or a cache was made with."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def teacher_fingerprint(teacher: nn.Module) -> str:
    """SHA-256 of a network's state (names, shapes, dtypes and values).

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> teacher_fingerprint(a) == teacher_fingerprint(a), teacher_fingerprint(a) == teacher_fingerprint(b)
        (True, False)
    """
    digest = hashlib.sha256()
    for name, tensor in teacher.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
