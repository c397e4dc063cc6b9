"""Name -> architecture registry, after timm's ``register_model`` / ``create_model`` design.

Our own families register five-line entrypoints with :func:`register_model`. Two prefixes reach external model zoos
without registering anything: ``"tv_<name>"`` / ``"torchvision.<name>"`` (torchvision classification models) and
``"timm.<name>"`` / ``"timm/<name>"`` (timm, an optional dependency). Neither downloads weights: load your own file
with ``checkpoint=``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from torch import nn

__all__ = [
    "ModelCfg",
    "ModelEntry",
    "UnknownModelError",
    "create_model",
    "get_model_entry",
    "is_model",
    "list_models",
    "register_model",
]

TORCHVISION_PREFIXES = ("tv_", "torchvision.")
TIMM_PREFIXES = ("timm.", "timm/")

_ModelFn = TypeVar("_ModelFn", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelCfg:
    """Defaults of an architecture: what a data pipeline needs to know before building it.

    Args:
        input_size: ``(channels, height, width)`` the architecture was designed for.
        num_classes: Default number of classes of the classifier.
    """

    input_size: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture.

    Args:
        name: Registry name (the entrypoint function's name).
        fn: Entrypoint; ``fn(**kwargs)`` builds the model.
        family: Family tag, by default the name of the module that registered it (``"cifar_resnet"``).
        default_cfg: Default input size and number of classes.
    """

    name: str
    fn: Callable[..., nn.Module] = field(repr=False)
    family: str
    default_cfg: ModelCfg


class UnknownModelError(ValueError, KeyError):
    """Raised by :func:`create_model` and :func:`get_model_entry` for a name that resolves to no model.

    A subclass of both ``ValueError`` and ``KeyError`` so either ``except`` clause catches it.
    """

    def __str__(self) -> str:
        # KeyError.__str__ repr()s its argument, which would print the multi-line message on one quoted line.
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, ModelEntry] = {}


@overload
def register_model(fn: _ModelFn, /) -> _ModelFn: ...


@overload
def register_model(
    fn: None = None, /, *, family: str | None = None, default_cfg: ModelCfg | None = None
) -> Callable[[_ModelFn], _ModelFn]: ...


def register_model(
    fn: _ModelFn | None = None, /, *, family: str | None = None, default_cfg: ModelCfg | None = None
) -> _ModelFn | Callable[[_ModelFn], _ModelFn]:
    """Register a model entrypoint under its function name; usable bare or with arguments.

    Args:
        fn: The entrypoint (when used as a bare ``@register_model``).
        family: Family tag; defaults to the last component of the entrypoint's module name.
        default_cfg: Default input size and number of classes; ``ModelCfg()`` (3x32x32, 10 classes) if not given.

    Returns:
        The entrypoint, unchanged (or a decorator doing the registration).

    Raises:
        ValueError: If another function already holds the name, or the name starts with an external-zoo prefix.

    Example::

        @register_model
        def resnet20(**kwargs: Any) -> CifarResNet:  # registered as "resnet20", family "cifar_resnet"
            return CifarResNet(depth=20, widths=(16, 16, 32, 64), **kwargs)

        @register_model(default_cfg=LeNet5.default_cfg)  # 1x28x28 inputs
        def lenet5(**kwargs: Any) -> LeNet5: ...
    """

    def decorator(entrypoint: _ModelFn) -> _ModelFn:
        name = entrypoint.__name__
        if name.startswith(TORCHVISION_PREFIXES + TIMM_PREFIXES):
            raise ValueError(f"Model name {name!r} starts with a prefix reserved for external model zoos.")
        previous = _REGISTRY.get(name)
        if previous is not None and _qualified_name(previous.fn) != _qualified_name(entrypoint):
            raise ValueError(
                f"Model name {name!r} is already registered by {_qualified_name(previous.fn)}; pick another name."
            )
        _REGISTRY[name] = ModelEntry(
            name=name,
            fn=entrypoint,
            family=family or entrypoint.__module__.rsplit(".", 1)[-1],
            default_cfg=default_cfg or ModelCfg(),
        )
        return entrypoint

    return decorator(fn) if fn is not None else decorator


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Names of our registered models, sorted.

    torchvision and timm models are reachable through their prefixes but are not listed here
    (``torchvision.models.list_models()`` and ``timm.list_models()`` list them).

    Args:
        pattern: Shell-style wildcard (``fnmatch``), e.g. ``"resnet*"`` or ``"wrn_*_2"``.
        family: Keep only this family (``"cifar_resnet"``, ``"wide_resnet"``, ``"vgg"``, ...).

    Returns:
        The matching names.

    Example:
        >>> list_models("wrn_40_*")
        ['wrn_40_1', 'wrn_40_2']
    """
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if fnmatch.fnmatchcase(name, pattern) and (family is None or entry.family == family)
    )


def is_model(name: str) -> bool:
    """Whether ``name`` resolves to a model: a registered name or an existing torchvision/timm name behind its prefix.

    Example:
        >>> is_model("resnet20"), is_model("tv_resnet18"), is_model("resnet2")
        (True, True, False)
    """
    if name in _REGISTRY:
        return True
    zoo, inner = _split_external(name)
    if zoo == "torchvision":
        from lightning_advkd.models.torchvision_models import list_torchvision_models

        return inner in list_torchvision_models()
    if zoo == "timm":
        try:
            import timm
        except ImportError:
            return False
        return bool(timm.is_model(inner))
    return False


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of one of our models.

    Raises:
        UnknownModelError: If the name is not registered; the message lists close names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(_unknown_name_message(name)) from None


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    checkpoint: str | Path | None = None,
    *,
    checkpoint_prefix: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name, optionally loading its weights.

    ``None`` values (in the named arguments and in ``kwargs``) are dropped, so the architecture's own defaults apply:
    a Hydra config can leave any of them ``null``.

    Names:
        * ours (see :func:`list_models`), e.g. ``"resnet20"``, ``"wrn_40_2"``, ``"lenet5"``;
        * ``"tv_<name>"`` or ``"torchvision.<name>"``: ``torchvision.models.<name>(weights=None, ...)``. Weights are
          never downloaded (this project runs offline); put a torchvision weight file on disk and pass it as
          ``checkpoint``. ``num_classes`` defaults to torchvision's 1000. ``in_chans != 3`` replaces the stem
          convolution for the families listed in ``torchvision_models.STEM_CONV``;
        * ``"timm.<name>"`` or ``"timm/<name>"``: ``timm.create_model(name, pretrained=False, ...)``; needs
          ``pip install lightning_advkd[timm]``.

    Args:
        name: Model name, see above.
        num_classes: Number of classes of the classifier; the architecture's default if ``None``.
        in_chans: Number of input channels; the architecture's default if ``None``.
        checkpoint: Weights to load with :func:`~lightning_advkd.models.load_weights` (a Lightning checkpoint, a
            plain state_dict file, or a whole saved module).
        checkpoint_prefix: Prefix of the model's keys inside ``checkpoint`` (e.g. ``"student."``); auto-detected
            if ``None``.
        **kwargs: Passed on to the architecture (e.g. ``drop_rate`` for the wide ResNets).

    Returns:
        The model, in training mode.

    Raises:
        UnknownModelError: If the name resolves to no model; the message lists close names.
        ImportError: For a ``timm.`` name when timm is not installed.
        ValueError: If pretrained weights are requested, or ``in_chans`` cannot be applied.
        CheckpointMismatchError: If ``checkpoint`` does not fit the model.

    Example:
        >>> model = create_model("resnet20", num_classes=100)
        >>> model.num_classes, model.num_features
        (100, 64)
    """
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    for flag in ("pretrained", "weights"):
        if kwargs.get(flag):
            raise ValueError(
                f"{flag}={kwargs[flag]!r}: lightning_advkd never downloads weights. Save the weights to a file and "
                "pass checkpoint=<path> instead."
            )
        kwargs.pop(flag, None)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans

    zoo, inner = _split_external(name)
    if zoo == "torchvision":
        from lightning_advkd.models.torchvision_models import create_torchvision_model

        model = create_torchvision_model(inner, **kwargs)
    elif zoo == "timm":
        from lightning_advkd.models.timm_models import create_timm_model

        model = create_timm_model(inner, **kwargs)
    else:
        model = get_model_entry(name).fn(**kwargs)

    if checkpoint is not None:
        from lightning_advkd.models._checkpoint import load_weights

        load_weights(model, checkpoint, prefix=checkpoint_prefix)
    return model


def _split_external(name: str) -> tuple[str | None, str]:
    for prefix in TORCHVISION_PREFIXES:
        if name.startswith(prefix):
            return "torchvision", name[len(prefix) :]
    for prefix in TIMM_PREFIXES:
        if name.startswith(prefix):
            return "timm", name[len(prefix) :]
    return None, name


def _unknown_name_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=6, cutoff=0.6)
    lines = [f"Unknown model {name!r}."]
    if close:
        lines.append(f"Close names: {', '.join(close)}.")
    from lightning_advkd.models.torchvision_models import list_torchvision_models

    if name in list_torchvision_models():
        lines.append(f"torchvision's {name} is available as 'tv_{name}'.")
    lines.append(
        "lightning_advkd.models.list_models() lists the registered names; torchvision models are reachable as "
        "'tv_<name>' and timm models as 'timm.<name>'."
    )
    return "\n".join(lines)


def unknown_external_name_message(name: str, zoo_prefix: str, known: list[str]) -> str:
    """Message for a prefixed name the external zoo does not know (shared by the torchvision and timm builders)."""
    close = difflib.get_close_matches(name, known, n=6, cutoff=0.6)
    lines = [f"Unknown model {zoo_prefix + name!r}."]
    if close:
        lines.append(f"Close names: {', '.join(zoo_prefix + c for c in close)}.")
    return "\n".join(lines)


def _qualified_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
