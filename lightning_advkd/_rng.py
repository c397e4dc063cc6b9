"""The random generators' state as plain tensors and Python values (so checkpoints load with ``weights_only=True``)."""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch


def get_rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy and Python generator states."""
    # The legacy (default) form is the tuple; numpy's stubs pick the dict overload for a call without arguments.
    legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    kind, keys, position, has_gauss, cached_gauss = legacy
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached_gauss": float(cached_gauss)}  # fmt: skip
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["kind"], keys, saved["position"], saved["has_gauss"], saved["cached_gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
