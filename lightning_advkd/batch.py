"""Reading inputs and (optional) labels out of the batch layouts users' dataloaders produce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor


def split_batch(batch: Any, input_key: str = "image", label_key: str = "label") -> tuple[Tensor, Tensor | None]:
    """Return ``(inputs, labels or None)`` from a tensor, a tuple/list ``(inputs, labels, ...)`` or a dict.

    Example:
        >>> import torch
        >>> x, y = split_batch((torch.zeros(2, 3), torch.tensor([0, 1])))
        >>> x.shape, y.tolist()
        (torch.Size([2, 3]), [0, 1])
        >>> split_batch(torch.zeros(2, 3))[1] is None
        True
    """
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        if input_key not in batch:
            raise KeyError(
                f"batch dict has no input key {input_key!r} (keys: {sorted(batch)}); set input_key= to the key that "
                "holds the images"
            )
        labels = batch.get(label_key)
        return batch[input_key], labels if isinstance(labels, Tensor) else None
    if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) > 0:
        inputs = batch[0]
        if not isinstance(inputs, Tensor):
            raise TypeError(f"the first element of a tuple/list batch must be the input tensor, got {type(inputs)}")
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return inputs, labels
    raise TypeError(
        f"unsupported batch type {type(batch).__name__}: give a tensor, a tuple/list whose first element is the input, "
        "or a dict with the input under input_key"
    )
