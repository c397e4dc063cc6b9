"""Taking features out of any ``nn.Module`` with forward hooks, and the adapter between feature widths.

A *tap* names where a feature is read inside a network:

* ``"layer4"``: the output of the submodule ``layer4`` (as in ``model.named_modules()``);
* ``"fc:input"``: the input of the submodule ``fc``;
* ``None``: the default, the input of the ``nn.Linear`` layer that produces the network's logits, i.e. the pooled
  penultimate feature that torchvision, timm and this package's models all feed to their classifier. That layer is
  found in a forward pass (:class:`LinearOutputs`) when the input shape is known, and checked on the first batch
  otherwise; before that, the last registered ``nn.Linear`` stands in for it.

Feature maps of rank 3 or 4 are average-pooled to ``(N, C)`` vectors (the discriminator is an MLP).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

INPUT_SUFFIX = ":input"
OUTPUT_SUFFIX = ":output"


class FeatureTapError(ValueError):
    """A feature tap names no layer, or its layer yields no tensor."""


def parse_tap(tap: str) -> tuple[str, bool]:
    """Split a tap into ``(module name, reads input)``.

    Example:
        >>> parse_tap("fc:input")
        ('fc', True)
        >>> parse_tap("layer3.1")
        ('layer3.1', False)
    """
    if tap.endswith(INPUT_SUFFIX):
        return tap[: -len(INPUT_SUFFIX)], True
    if tap.endswith(OUTPUT_SUFFIX):
        return tap[: -len(OUTPUT_SUFFIX)], False
    return tap, False


def find_module(model: nn.Module, name: str, role: str = "model") -> nn.Module:
    """Return ``model``'s submodule called ``name``, failing with the closest existing names."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise FeatureTapError(
        f"{role} has no layer named {name!r}.{hint} List them with `[n for n, _ in {role}.named_modules()]`."
    )


def last_linear_name(model: nn.Module, role: str = "model") -> str:
    """Name of the last ``nn.Linear`` registered in ``model`` (its classifier, for ordinary networks)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise FeatureTapError(
            f"{role} has no nn.Linear layer, so the default feature tap (the input of the last Linear) does not "
            f"apply. Name the layer whose output is the penultimate feature, e.g. {role}_tap='avgpool'."
        )
    return names[-1]


def resolve_tap(model: nn.Module, tap: str | None, role: str = "model") -> str:
    """Turn ``None`` into the default tap and check that a named tap exists; returns the explicit tap string."""
    if tap is None:
        return last_linear_name(model, role) + INPUT_SUFFIX
    name, _ = parse_tap(tap)
    find_module(model, name, role)
    return tap


def static_feature_width(model: nn.Module, tap: str) -> int | None:
    """The width a tap yields when it can be read off a layer without a forward pass, else ``None``."""
    name, reads_input = parse_tap(tap)
    module = find_module(model, name)
    if isinstance(module, nn.Linear):
        return module.in_features if reads_input else module.out_features
    return None


def static_num_classes(model: nn.Module) -> int | None:
    """``out_features`` of the model's last ``nn.Linear`` (its classifier, for ordinary networks), or ``None``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def first_tensor(value: Any) -> Tensor | None:
    """The first tensor in a (possibly nested) tuple, list or dict of module inputs or outputs, or ``None``."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def pool_features(features: Tensor) -> Tensor:
    """Average-pool ``(N, C, H, W)`` maps over space and ``(N, L, C)`` token sequences over tokens to ``(N, C)``."""
    if features.dim() == 4:
        return features.mean(dim=(2, 3))
    if features.dim() == 3:
        return features.mean(dim=1)
    if features.dim() == 2:
        return features
    return features.flatten(1)


class FeatureTap:
    """Reads the input or output of one named layer during a forward pass, through a forward hook.

    The hook exists only inside :meth:`capture`: outside it the network carries no hook of this package, so ordinary
    calls, copies, pickling and export see the user's network exactly as it was.

    Args:
        model: the network to read from.
        tap: the tap string (see the module docstring); ``None`` for the default.
        role: the network's name in error messages (``"teacher"``, ``"student"``).
        pool: average-pool feature maps to vectors.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> tap = FeatureTap(net)
        >>> tap.tap
        '2:input'
        >>> with tap.capture():
        ...     logits = net(torch.ones(1, 4))
        >>> tap.pop().shape
        torch.Size([1, 3])
    """

    def __init__(self, model: nn.Module, tap: str | None = None, role: str = "model", pool: bool = True) -> None:
        self.tap = resolve_tap(model, tap, role)
        self.role = role
        self.pool = pool
        name, self.reads_input = parse_tap(self.tap)
        self._layer_name = name
        self._model = model
        self._value: Tensor | None = None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self._value = first_tensor(inputs if self.reads_input else output)

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Record the tapped tensor during the forward passes inside this block (the hook lives only here)."""
        self._value = None
        handle = find_module(self._model, self._layer_name, self.role).register_forward_hook(self._hook)
        try:
            yield
        finally:
            handle.remove()

    def remove(self) -> None:
        """Nothing to detach: kept for compatibility, the hook never outlives :meth:`capture`."""

    def pop(self) -> Tensor:
        """Return the tensor recorded by the last :meth:`capture` (pooled if ``pool``) and forget it."""
        value, self._value = self._value, None
        if value is None:
            raise FeatureTapError(
                f"{self.role} feature tap {self.tap!r} yielded no tensor during the forward pass: the layer was not "
                f"called, or its {'input' if self.reads_input else 'output'} holds no tensor. Pick another layer "
                f"with {self.role}_tap=..."
            )
        return pool_features(value) if self.pool else value


class LinearOutputs:
    """Records the output of every ``nn.Linear`` of a network during a forward pass.

    It finds the layer that produced the logits (the classifier, whatever the order in which the layers were
    registered).

    Example:
        >>> import torch
        >>> class Net(nn.Module):  # registers its classifier before another Linear
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.head = nn.Linear(3, 2)
        ...         self.proj = nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         return self.head(self.proj(x))
        >>> net, recorder = Net(), LinearOutputs()
        >>> with recorder.capture(net):
        ...     logits = net(torch.ones(1, 4))
        >>> recorder.producer(logits)
        'head'
    """

    def __init__(self) -> None:
        self.outputs: list[tuple[str, Tensor]] = []

    @contextmanager
    def capture(self, model: nn.Module) -> Iterator[None]:
        """Record inside this block only (the hooks are removed on exit)."""
        self.outputs = []
        handles = [
            module.register_forward_hook(functools.partial(self._hook, name))
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str, module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            self.outputs.append((name, output))

    def producer(self, logits: Tensor) -> str | None:
        """Name of the last ``nn.Linear`` called whose output is the logits (the same tensor, or equal values)."""
        for name, output in reversed(self.outputs):
            if output is logits:
                return name
        for name, output in reversed(self.outputs):
            if output.shape == logits.shape and bool((output.detach() == logits.detach()).all()):
                return name
        return None


def make_adapter(student_width: int, teacher_width: int, activation: str = "none") -> nn.Module:
    """A learned linear map from student to teacher feature width; the identity when the widths already match.

    ``activation="relu"`` ends it with a ReLU, so adapted features share the non-negative range of the pooled
    post-ReLU features most teachers produce (a signed adapter output tells a discriminator "student" by its sign).

    Example:
        >>> make_adapter(6, 4, activation="relu")
        Sequential(
          (0): Linear(in_features=6, out_features=4, bias=True)
          (1): ReLU()
        )
    """
    if activation not in ("none", "relu"):
        raise ValueError(f"adapter activation must be 'none' or 'relu', got {activation!r}")
    linear = nn.Identity() if student_width == teacher_width else nn.Linear(student_width, teacher_width)
    return linear if activation == "none" else nn.Sequential(linear, nn.ReLU())
