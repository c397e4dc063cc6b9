"""Reading the logits out of whatever a network's ``forward`` returns.

The rule, applied when no output is named:

1. a tensor is the logits;
2. an object with a tensor ``logits`` attribute or key (Hugging Face ``ModelOutput``, a named tuple, a dict) gives it;
3. a tuple, list or dict holding exactly one tensor gives that tensor;
4. anything else (e.g. ``(features, logits)``) is ambiguous: an :class:`OutputError` asks to name the output.

Naming it (``teacher_output=`` / ``student_output=`` on the distillation modules, ``output=`` on
:class:`~lightning_advkd.supervised.SupervisedClassifier`): a key or attribute name (``"logits"``), an index into a
tuple (``1``), or a callable ``output -> logits``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

#: How to name a network's logits: a key or attribute, a tuple index, or a callable ``output -> logits``.
OutputSpec = str | int | Callable[[Any], Tensor] | None


class OutputError(ValueError):
    """A network's output holds no logits, or several tensors with no rule to tell which are the logits."""


def read_logits(output: Any, spec: OutputSpec = None, role: str = "model", option: str | None = None) -> Tensor:
    """The logits in a network's output, by ``spec`` or by the rule of the module docstring.

    Args:
        output: what ``forward`` returned.
        spec: the named output, or ``None`` for the rule.
        role: the network's name in error messages.
        option: the argument that names the output, for error messages (default ``<role>_output``).

    Raises:
        OutputError: when the output is ambiguous, holds no tensor, or ``spec`` names nothing there.

    Example:
        >>> import torch
        >>> features, logits = torch.zeros(2, 8), torch.ones(2, 3)
        >>> read_logits({"logits": logits, "features": features}) is logits
        True
        >>> read_logits((features, logits), spec=1) is logits
        True
        >>> read_logits((features, logits))
        Traceback (most recent call last):
        ...
        lightning_advkd.outputs.OutputError: model returns a tuple of 2 tensors (shapes [(2, 8), (2, 3)]): which one \
holds the logits is ambiguous. Name it with model_output= (a key, an index, or a callable output -> logits)
    """
    option = option or f"{role}_output"
    if spec is not None:
        return _named(output, spec, role, option)
    if isinstance(output, Tensor):
        return output
    named = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(named, Tensor):
        return named
    values = list(output.values()) if isinstance(output, Mapping) else output
    if isinstance(values, (tuple, list)):
        tensors = [v for v in values if isinstance(v, Tensor)]
        if len(tensors) == 1:
            return tensors[0]
        if tensors:
            shapes = [tuple(t.shape) for t in tensors]
            raise OutputError(
                f"{role} returns a {type(output).__name__} of {len(tensors)} tensors (shapes {shapes}): which one "
                f"holds the logits is ambiguous. Name it with {option}= (a key, an index, or a callable output -> "
                "logits)"
            )
    raise OutputError(
        f"{role} returned {type(output).__name__} from forward, which holds no logits tensor: return the logits, or "
        f"name them with {option}= (a key, an index, or a callable output -> logits)"
    )


def _named(output: Any, spec: OutputSpec, role: str, option: str) -> Tensor:
    try:
        if callable(spec):
            value = spec(output)
        elif isinstance(spec, int) and not isinstance(spec, bool):
            value = output[spec]
        elif isinstance(spec, str):
            value = output[spec] if isinstance(output, Mapping) else getattr(output, spec)
        else:
            raise OutputError(f"{option} must be a key, an index or a callable, got {spec!r}")
    except (KeyError, IndexError, AttributeError, TypeError) as err:
        raise OutputError(
            f"{option}={spec!r} names nothing in the {type(output).__name__} that {role} returns ({err})"
        ) from err
    if not isinstance(value, Tensor):
        raise OutputError(f"{option}={spec!r} gives a {type(value).__name__} from {role}'s output, not a tensor")
    return value


__all__ = ["OutputError", "OutputSpec", "read_logits"]
