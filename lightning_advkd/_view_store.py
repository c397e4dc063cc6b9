"""The on-disk layout of an augmented-view cache: one memory-mapped ``.npy`` file per tensor, a key, done markers.

A cache folder holds ``meta.json`` (the cache's key: teacher fingerprint, tap, dataset digest, recipe, K, seed, dtype
and format version), one ``(K, N, ...)`` ``.npy`` file per teacher output and per augmentation parameter of the views,
a ``view-XXXXX.done`` marker per finished view (so an interrupted build resumes at the first unfinished one) and the
``build.lock`` file that serializes builders. :class:`~lightning_advkd.AugmentedViewCache` reads and writes it through
these functions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from lightning_advkd._atomic import verify, write_atomic

FORMAT_VERSION = 1
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}
META = "meta.json"
LOCK = "build"  # the lock file is build.lock
PARAM_PREFIX = "view_param:"

#: The fields that name a cache, with the words the refusal uses for them.
KEY_FIELDS = {
    "teacher_fingerprint": "teacher (fingerprint of its weights)",
    "teacher_tap": "teacher feature tap",
    "dataset_digest": "dataset (digest of its images and labels)",
    "recipe": "augmentation recipe",
    "num_views": "num_views (K)",
    "seed": "view seed",
    "dtype": "storage dtype",
    "attention_layers": "attention_layers",
    "format": "cache format version",
}


class ViewCacheMismatchError(ValueError):
    """A cache folder holds the outputs of another teacher, tap, dataset, recipe, K, seed or dtype."""


def file_name(name: str) -> str:
    """The ``.npy`` file name of the stored tensor ``name``, with characters unsafe in file names replaced by ``-``.

    Example:
        >>> file_name("teacher_attention:layer1.0")
        'teacher_attention-layer1.0.npy'
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name) + ".npy"


def done_marker(path: Path, view: int) -> Path:
    """The file whose presence in ``path`` says that view ``view`` is completely written."""
    return path / f"view-{view:05d}.done"


def mark_done(path: Path, view: int) -> None:
    """Mark view ``view`` of the cache at ``path`` finished (atomically: the marker exists whole or not at all)."""
    write_atomic(done_marker(path, view), lambda f: f.write(b"done\n"), checksum=False)


def allocate(shapes: dict[str, tuple[tuple[int, ...], Any]], path: Path | None) -> dict[str, np.ndarray]:
    """Arrays of the given shapes: in memory, or ``.npy`` files memory-mapped for writing (reopened if present).

    Args:
        shapes: the ``(shape, dtype)`` of each array, by name.
        path: the cache folder; ``None`` allocates zero-filled arrays in memory.

    Returns:
        The arrays by name. On disk, a file that already has the asked shape and dtype is reopened as it is (an
        interrupted build keeps its finished views); any other is created anew.
    """
    arrays: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in shapes.items():
        if path is None:
            arrays[name] = np.zeros(shape, dtype=dtype)
            continue
        file = path / file_name(name)
        if file.is_file():
            existing = np.load(file, mmap_mode="r+")
            if existing.shape == shape and existing.dtype == np.dtype(dtype):
                arrays[name] = existing
                continue
            del existing
        arrays[name] = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
    return arrays


def check_or_write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write the cache's key to an empty folder, or check that the folder holds the cache of this key.

    Args:
        path: the cache folder.
        meta: the key of the cache to build or reuse (every field of :data:`KEY_FIELDS`, and more).

    Raises:
        ViewCacheMismatchError: when the folder holds cache files without a key, or the key of another cache (naming
            the fields that differ and the fix).
    """
    file = path / META
    if not file.is_file():
        if any(path.glob("*.npy")) or any(path.glob("*.done")):
            raise ViewCacheMismatchError(
                f"{path} holds cache files but no {META}: it is not a complete view cache. Delete the folder to "
                "rebuild it, or pass another path"
            )
        text = json.dumps(meta, indent=1, sort_keys=True) + "\n"
        write_atomic(file, lambda f: f.write(text.encode()))
        return
    verify(file)
    found = json.loads(file.read_text())
    mismatched = [field for field in KEY_FIELDS if found.get(field) != meta[field]]
    if mismatched:
        what = ", ".join(KEY_FIELDS[field].split(" (")[0] for field in mismatched)
        details = "; ".join(
            f"{KEY_FIELDS[field]}: cached {_short(found.get(field))}, asked {_short(meta[field])}"
            for field in mismatched
        )
        raise ViewCacheMismatchError(
            f"the view cache at {path} was built for another {what} ({details}). Delete that folder to rebuild it for "
            "this run, or pass another path (one folder per teacher, tap, dataset, recipe, num_views, seed and dtype; "
            "cache_folder_name() names one)"
        )


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "..." if re.fullmatch(r"[0-9a-f]{64}", text) else repr(value)


__all__ = [
    "FORMAT_VERSION",
    "KEY_FIELDS",
    "LOCK",
    "META",
    "PARAM_PREFIX",
    "STORAGE_DTYPES",
    "ViewCacheMismatchError",
    "allocate",
    "check_or_write_meta",
    "done_marker",
    "file_name",
    "mark_done",
]
