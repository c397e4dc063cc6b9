"""Load weights into a model from the checkpoint formats people actually have on disk."""

from __future__ import annotations

import importlib
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["CheckpointMismatchError", "LoadedWeights", "load_weights", "read_checkpoint"]

# Keys under which checkpoint dicts keep the weights: Lightning ("state_dict"), torchvision's and many research
# repos' training scripts ("model").
_STATE_DICT_KEYS = ("state_dict", "model")
_SHOW = 5  # how many offending keys of each kind an error message lists

# Plain data types a checkpoint may name and we unpickle under weights_only=True (rebuilding them runs no code of the
# file's choosing): builtin containers, torchvision's partial(norm_layer), our ModelCfg (set on torchvision models),
# and the OmegaConf config classes Hydra users' LightningModules store in their hyper-parameters.
_DATA_GLOBALS = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "collections.defaultdict",
        "typing.Any",
        "functools.partial",
        "lightning_advkd.models._registry.ModelCfg",
        "omegaconf.dictconfig.DictConfig",
        "omegaconf.listconfig.ListConfig",
        "omegaconf.base.ContainerMetadata",
        "omegaconf.base.Metadata",
        "omegaconf.nodes.AnyNode",
        "omegaconf.nodes.StringNode",
        "omegaconf.nodes.IntegerNode",
        "omegaconf.nodes.FloatNode",
        "omegaconf.nodes.BooleanNode",
    }
)


class CheckpointMismatchError(RuntimeError):
    """Raised when a checkpoint's weights do not fit the model (missing / unexpected keys, shape mismatches)."""


class LoadedWeights(NamedTuple):
    """What :func:`load_weights` did.

    Attributes:
        prefix: Prefix stripped from the checkpoint keys (``""`` if none).
        missing_keys: Model keys the checkpoint did not provide (only non-empty with ``strict=False``).
        unexpected_keys: Checkpoint keys (under ``prefix``) the model does not have (only with ``strict=False``).
    """

    prefix: str
    missing_keys: list[str]
    unexpected_keys: list[str]


def load_weights(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, Any] | nn.Module,
    *,
    prefix: str | None = None,
    strict: bool = True,
    weights_only: bool | None = None,
) -> LoadedWeights:
    """Copy weights from a checkpoint into ``model``, in place.

    Accepted checkpoints (a path, or the already loaded object):

    * a Lightning checkpoint: a dict whose ``"state_dict"`` (or ``"model"``) entry holds the weights, usually under
      the attribute name of the network in the LightningModule (``"student."``, ``"model."``, ``"net."``);
    * a plain ``state_dict`` (``torch.save(model.state_dict(), path)``);
    * a whole saved module (``torch.save(model, path)``).

    The prefix is auto-detected when ``prefix`` is ``None``: the one whose stripped keys match the most of the model's
    keys with the right shapes (fewest left-over keys on a tie); ``""`` means the keys are used as they are. Keys
    outside the prefix (other networks of a LightningModule, optimizer-free extras) are ignored.

    Files are read by :func:`read_checkpoint`, always with ``torch.load(weights_only=True)``: no code of the file's
    choosing ever runs. A whole saved module, or a Lightning checkpoint whose hyper-parameters hold an OmegaConf (Hydra)
    config, names classes ``weights_only=True`` refuses by default: when the only ones are ``nn.Module`` classes already
    imported in this process and plain config types, exactly those are allowed. Anything else is refused with a
    message naming the file and the fix.

    Args:
        model: The model to fill.
        checkpoint: Path or loaded object, see above.
        prefix: Prefix of the model's keys in the checkpoint (``"student."``; the trailing dot may be omitted;
            ``""`` for none). Auto-detected if ``None``.
        strict: Require the checkpoint to provide exactly the model's keys. Shape mismatches always raise.
        weights_only: ``None`` (default) allows saved modules and configs as described above; ``True`` is plain
            ``torch.load(weights_only=True)``. ``False`` is refused: unpickling a file can run arbitrary code, so this
            package never does it. For a file you trust, call ``torch.load`` yourself with ``weights_only`` set to
            ``False`` and pass the loaded object.

    Returns:
        The prefix used and the keys that were missing or unexpected (non-empty only with ``strict=False``).

    Raises:
        CheckpointMismatchError: If keys are missing or unexpected (with ``strict=True``) or shapes differ; the message
            lists the first offending keys of each kind with counts and the prefix tried.
        ValueError: If the prefix is ambiguous (the checkpoint holds several networks that fit the model), or the
            checkpoint holds no recognisable weights.
        pickle.UnpicklingError: If the file needs unsafe unpickling; the message names the file and the fix.
        FileNotFoundError: If the path is not a file.

    Example:
        >>> import torch
        >>> from lightning_advkd.models import create_model, load_weights
        >>> student = create_model("resnet8")
        >>> ckpt = {"state_dict": {f"student.{k}": v for k, v in student.state_dict().items()}, "epoch": 3}
        >>> load_weights(create_model("resnet8"), ckpt).prefix
        'student.'
    """
    source = f"Checkpoint {str(checkpoint)!r}" if isinstance(checkpoint, str | Path) else "The given checkpoint"
    loaded = (
        read_checkpoint(checkpoint, weights_only=weights_only) if isinstance(checkpoint, str | Path) else checkpoint
    )
    state, kind = _extract_state_dict(loaded, source)

    model_state = model.state_dict()
    if prefix is None:
        prefix, how = _detect_prefix(state, model_state, source), "auto-detected"
    else:
        prefix, how = prefix.strip(".") + "." if prefix.strip(".") else "", "given"
    stripped = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}

    missing = [key for key in model_state if key not in stripped]
    unexpected = [key for key in stripped if key not in model_state]
    mismatched = [
        f"{key}: checkpoint {tuple(stripped[key].shape)} vs model {tuple(model_state[key].shape)}"
        for key in model_state
        if key in stripped and _shape(stripped[key]) is not None and _shape(stripped[key]) != _shape(model_state[key])
    ]
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(
            _mismatch_message(
                model, source, kind, prefix, how, missing, unexpected, mismatched, sorted(state), list(model_state)
            )
        )
    model.load_state_dict(stripped, strict=strict)
    return LoadedWeights(prefix=prefix, missing_keys=missing, unexpected_keys=unexpected)


def read_checkpoint(path: str | Path, *, weights_only: bool | None = None) -> Any:
    """Load a checkpoint file on the CPU with ``torch.load(weights_only=True)``; no code from the file can run.

    Args:
        path: The file.
        weights_only: ``None`` (default) also allows the classes a whole saved module or a Hydra config in the
            hyper-parameters names, when they are ``nn.Module`` classes already imported here or plain config types
            (see :func:`load_weights`); ``True`` allows nothing beyond ``torch.load``'s own list. ``False`` is refused.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If ``weights_only`` is ``False``, or the file is damaged (truncated, empty, not a torch
            checkpoint); the message names the file.
        pickle.UnpicklingError: If the file names classes that may not be unpickled; the message names the file, the
            classes and the fix.
    """
    path = Path(path)
    if weights_only is False:
        raise ValueError(
            f"weights_only set to False is refused for {str(path)!r}: unpickling a file can run arbitrary code, so "
            "lightning_advkd never does it. If you trust the file, load it yourself with torch.load and "
            "weights_only set to False, and pass the loaded object instead of the path."
        )
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file {str(path)!r} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_error: Exception = err
    except Exception as err:  # (torch's errors for damaged files name no file: add it)
        raise _damaged(path, err) from err
    blocked = _unsafe_globals(path)
    refused = blocked if weights_only else [name for name in blocked if _allowed_global(name) is None]
    if refused or not blocked:
        raise pickle.UnpicklingError(
            f"Checkpoint {str(path)!r} cannot be read safely with torch.load(weights_only=True): it references "
            f"{refused or 'objects torch refuses'}, which are neither nn.Module classes imported in this process nor "
            "config types we allow (a crafted file can run code when unpickled, so it was not). Re-save the weights "
            "as a plain state_dict (torch.save(model.state_dict(), path)), or import the module that defines those "
            f"classes first. torch said: {first_error}"
        ) from first_error
    # Two kinds of files get here. A whole saved module (torch.save(model)) names the model's classes, which
    # weights_only=True refuses unless told about them; and a Lightning checkpoint whose hyper-parameters hold a Hydra
    # (OmegaConf) config names the config classes. Allow exactly the globals the file names, after checking each one:
    # an nn.Module subclass already imported in this process (resolving its name never imports, so the file cannot
    # trigger an import side effect), or a fixed list of plain data types. The weights-only unpickler rebuilds an
    # allowed class with __new__ and __setstate__: no __init__, nothing of the file's choosing runs.
    with torch.serialization.safe_globals([_allowed_global(name) for name in blocked]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise
        except Exception as err:
            raise _damaged(path, err) from err


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a zip checkpoint names beyond torch's safe list; ``[]`` if they cannot be listed (legacy format)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a pre-zip (legacy) or non-torch pickle: refused as a whole below
        return []


def _damaged(path: Path, err: Exception) -> ValueError:
    return ValueError(
        f"Checkpoint {str(path)!r} is damaged or not a torch checkpoint ({type(err).__name__}: {err}). If it was cut "
        "short by a crash or a full disk, use an earlier checkpoint or recreate this one."
    )


def _allowed_global(qualified_name: str) -> Any:
    """The object a pickle global names if it may be unpickled here, else ``None``."""
    if qualified_name in _DATA_GLOBALS:
        module_name, _, attr = qualified_name.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):  # e.g. omegaconf not installed: the file cannot be read anyway
            return None
    parts = qualified_name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
        return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None
    return None


def _extract_state_dict(obj: Any, source: str) -> tuple[Mapping[str, Any], str]:
    if isinstance(obj, nn.Module):
        return obj.state_dict(), f"a saved {type(obj).__name__} module"
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a state_dict, checkpoint dict or nn.Module.")
    for key in _STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, nn.Module):
            return inner.state_dict(), f"a checkpoint dict with a saved module under {key!r}"
        if isinstance(inner, Mapping):
            return inner, f"a checkpoint dict, weights under {key!r}"
    if obj and all(isinstance(key, str) for key in obj) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "a plain state_dict"
    raise ValueError(
        f"{source} holds no weights: expected a state_dict, or a dict with one of {list(_STATE_DICT_KEYS)}; its "
        f"top-level keys are {_preview(list(obj))}."
    )


def _detect_prefix(state: Mapping[str, Any], model_state: Mapping[str, Any], source: str) -> str:
    """Prefix under which ``state`` best matches the model; ``""`` if nothing matches (the error then shows why)."""
    matched: dict[str, int] = {}
    for key, value in state.items():
        # Every split point of the key at a "." gives a candidate prefix, plus the empty prefix.
        for cut in [0, *(i + 1 for i, char in enumerate(key) if char == ".")]:
            rest = key[cut:]
            if rest in model_state and _shape(value) == _shape(model_state[rest]):
                matched[key[:cut]] = matched.get(key[:cut], 0) + 1
    if not matched:
        return ""

    def score(prefix: str) -> tuple[int, int]:
        extra = sum(1 for key in state if key.startswith(prefix)) - matched[prefix]
        return matched[prefix], -extra

    best = max(score(p) for p in matched)
    winners = sorted(p for p in matched if score(p) == best)
    if len(winners) > 1 and "" not in winners:
        raise ValueError(
            f"{source} holds several networks that fit the model, under the prefixes {winners}: pass prefix= to choose."
        )
    return "" if "" in winners else winners[0]


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _mismatch_message(
    model: nn.Module,
    source: str,
    kind: str,
    prefix: str,
    how: str,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
    checkpoint_keys: list[str],
    model_keys: list[str],
) -> str:
    lines = [
        f"{source} ({kind}) does not fit {type(model).__name__}; prefix tried: {prefix!r} ({how}).",
        f"  missing keys ({len(missing)}): {_preview(missing)}",
        f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}",
        f"  shape mismatches ({len(mismatched)}): {_preview(mismatched)}",
    ]
    if len(missing) == len(model_keys):
        lines.append(
            f"  No key matched. Checkpoint keys start: {_preview(checkpoint_keys)}; model keys start: "
            f"{_preview(model_keys)}. Pass prefix= if the model's weights sit under another name."
        )
    return "\n".join(lines)


def _preview(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return f"{shown}, ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else shown or "none"
