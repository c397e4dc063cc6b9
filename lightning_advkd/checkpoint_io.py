"""A ``CheckpointIO`` that never leaves a damaged or non-finite checkpoint where a good one was."""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lightning_advkd._atomic import CorruptFileError, checksum_path, verify, write_atomic

_SHOW = 5  # how many offending tensors an error lists


class NonFiniteCheckpointError(ValueError):
    """A checkpoint about to be written holds NaN or Inf in its weights, buffers or optimizer state."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes every checkpoint atomically in its own folder, with a checksum, and refuses non-finite ones.

    Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temp file lives in ``$TMPDIR``: when
    that is another filesystem than the run's folder (a tmpfs ``/tmp``, outputs on NFS), the final move is a copy, and a
    kill during it truncates the previous good ``last.ckpt``; on the same filesystem a kill leaves the temp file behind.
    This plug-in writes to a temp file in the checkpoint's own folder, fsyncs it and renames it over the old file
    (:func:`lightning_advkd._atomic.write_atomic`), so a kill, a crash or a full disk leaves the old checkpoint or the
    new one, never a mix; temp files of writers killed on this host are swept by the next save. A ``<ckpt>.sha256``
    beside each checkpoint is verified when it is loaded (resume, ``test(ckpt_path=...)``), so a garbled checkpoint is
    named instead of loaded. Remote (non-local fsspec) paths are left to Lightning's own writer.

    Args:
        checksum: Write ``<ckpt>.sha256`` beside each checkpoint and verify it when loading (a checkpoint without one,
            e.g. written by another plug-in, loads unchecked).
        allow_non_finite: Write checkpoints whose weights, buffers or optimizer state hold NaN/Inf. By default such a
            checkpoint is refused (the run stops) and the previous one stays: a non-finite state is not worth resuming
            from, and writing it would overwrite the last good ``last.ckpt``.

    Raises:
        NonFiniteCheckpointError: At save, naming the first non-finite tensors and the file that was kept.
        lightning_advkd._atomic.DiskFullError: At save, when the disk is full; names the folder.
        lightning_advkd._atomic.CorruptFileError: At load, when the file does not match its checksum or is unreadable.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(plugins=[AtomicCheckpointIO()], logger=False, enable_progress_bar=False)
        >>> type(trainer.strategy.checkpoint_io).__name__
        'AtomicCheckpointIO'
    """

    def __init__(self, *, checksum: bool = True, allow_non_finite: bool = False) -> None:
        super().__init__()
        self.checksum = checksum
        self.allow_non_finite = allow_non_finite

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options (got {storage_options!r}): call "
                "Trainer.save_checkpoint(path) without them."
            )
        path = Path(path)
        if not self.allow_non_finite:
            bad = non_finite_tensors(checkpoint)
            if bad:
                kept = f"the previous {path.name} was left as it was" if path.exists() else f"{path} was not written"
                shown = ", ".join(bad[:_SHOW]) + (f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else "")
                raise NonFiniteCheckpointError(
                    f"refusing to write checkpoint {path}: non-finite values (NaN/Inf) in {shown}; {kept}. Find the "
                    "cause (a diverging loss, or inputs so large that BatchNorm statistics overflow), or pass "
                    "AtomicCheckpointIO(allow_non_finite=True) to write such checkpoints anyway."
                )
        write_atomic(path, lambda f: torch.save(checkpoint, f), checksum=self.checksum)

    @override
    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        file = Path(path).resolve()  # a symlinked last.ckpt: its checksum sits beside the target
        if self.checksum and checksum_path(file).is_file():
            try:
                verify(file)
            except CorruptFileError as err:
                raise CorruptFileError(
                    path,
                    f"cannot be loaded: {str(err).removeprefix(str(file)).strip()}. Resume from an earlier "
                    "checkpoint, or delete this one and its .sha256 file.",
                ) from err
        try:
            return super().load_checkpoint(
                path, map_location=map_location, weights_only=True if weights_only is None else weights_only
            )
        except (EOFError, RuntimeError, zipfile.BadZipFile) as err:
            raise CorruptFileError(
                path, f"cannot be loaded, it is damaged or not a checkpoint ({type(err).__name__}: {err})"
            ) from err
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(
                f"{path} cannot be loaded with torch.load(weights_only=True) (it names objects that could run code "
                f"when unpickled). If you trust the file, set the weights_only argument of fit/test to False. "
                f"torch said: {err}"
            ) from err

    @override
    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        if _is_local(path):
            with contextlib.suppress(FileNotFoundError):
                checksum_path(path).unlink()


def non_finite_tensors(checkpoint: Mapping[str, Any]) -> list[str]:
    """Names of the floating tensors holding NaN/Inf in a Lightning checkpoint's weights and optimizer states.

    Example:
        >>> non_finite_tensors({"state_dict": {"bn.running_var": torch.tensor([1.0, float("inf")])}})
        ["state_dict['bn.running_var']"]
    """
    found = []
    for name, tensor in _weight_tensors(checkpoint):
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            found.append(name)
    return found


def _weight_tensors(checkpoint: Mapping[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    # Only the learned state: callbacks keep legitimate infinities (EarlyStopping's initial best score is inf).
    for key, value in (checkpoint.get("state_dict") or {}).items():
        if isinstance(value, torch.Tensor):
            yield f"state_dict[{key!r}]", value
    for i, optimizer in enumerate(checkpoint.get("optimizer_states") or []):
        for param, state in (optimizer.get("state") or {}).items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    yield f"optimizer_states[{i}]['state'][{param!r}][{key!r}]", value


def _is_local(path: Any) -> bool:
    return isinstance(get_filesystem(path), LocalFileSystem)


__all__ = ["AtomicCheckpointIO", "NonFiniteCheckpointError", "non_finite_tensors"]
