"""Augmented-view teacher cache: the frozen teacher's outputs on K augmented views of every sample, computed once.

The teacher-output cache (:class:`~lightning_advkd.TeacherOutputCache`) is exact only without random augmentation.
FKD (Shen & Xing, "A Fast Knowledge Distillation Framework for Visual Recognition", ECCV 2022, Sec. 3) removes that
limit: make the augmentation of each view a function of ``(seed, view, sample)``, store the teacher's outputs for K
views per sample together with the views' augmentation parameters, and hand the student exactly those views.
:class:`AugmentedViewCache` does that for the in-memory small-image path (:class:`~lightning_advkd.AugmentedViews`
over a ``TensorImageTransform``), with the pooled features the adversarial and hint terms need, the logits, and
optionally attention maps.

Epoch ``e`` reads view ``e % K`` (:class:`~lightning_advkd.ViewSampler`): with ``K >= max_epochs`` every epoch sees
fresh views, exactly as a live augmented run that draws the same views; with fewer, epoch ``K`` sees view 0 again, so
the student meets each augmented image ``ceil(max_epochs / K)`` times (cycled views, the FKD trade-off: K views cost
K teacher passes once, reusable by every later run with the same teacher, data, recipe, K and seed).

On disk (``path``), every tensor is one ``.npy`` file memory-mapped on read, shaped ``(K, N, ...)``, so the cache may
exceed RAM. fp32 by default (bit-exact); ``dtype="float16"`` halves the files (``K * N * (feature width + classes)``
values of 2 bytes instead of 4, e.g. 10 views of Fashion-MNIST's 60,000 images with a 192-wide feature and 10
classes: 485 MB in fp32, 242 MB in fp16) and is no longer bit-exact. The build runs view by view and marks each
finished view, so an interrupted build resumes at the first unfinished view; an exclusive file lock makes a second
process that builds the same cache wait, then reuse it. A folder holding a cache of another teacher, tap, dataset,
recipe, K, seed or dtype is refused, naming the difference.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from lightning_advkd import AugmentedViews
    >>> from lightning_advkd.data import TensorImageTransform
    >>> images, labels = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8), torch.arange(10) % 3
    >>> views = AugmentedViews(images, labels, TensorImageTransform([0.5], [0.5], padding=2), num_views=4, seed=0)
    >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> cache = AugmentedViewCache(views, teacher)
    >>> sorted(cache[2, 5])  # view 2 of sample 5
    ['image', 'label', 'teacher_features', 'teacher_key', 'teacher_logits']
    >>> loader = cache.dataloader(batch_size=4)  # epoch e reads view e % 4, shuffled
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_advkd._atomic import file_lock
from lightning_advkd._view_store import (
    FORMAT_VERSION,
    LOCK,
    PARAM_PREFIX,
    STORAGE_DTYPES,
    ViewCacheMismatchError,
    allocate,
    check_or_write_meta,
    done_marker,
    file_name,
    mark_done,
)
from lightning_advkd.collate import SampleBatch, split_samples
from lightning_advkd.data.views import AugmentedViews, read_in_order, view_loader
from lightning_advkd.features import FeatureTap, first_tensor
from lightning_advkd.fingerprint import teacher_fingerprint
from lightning_advkd.functional import attention_map
from lightning_advkd.teacher_cache import (
    TEACHER_ATTENTION,
    TEACHER_FEATURES,
    TEACHER_KEY,
    TEACHER_LOGITS,
    teacher_cache_key,
)

log = logging.getLogger(__name__)


class AugmentedViewCache(Dataset):
    """The teacher's features and logits on K augmented views of every sample; samples are the student's views.

    Items are ``(view, index)`` pairs, as :class:`~lightning_advkd.ViewSampler` yields them (use
    :meth:`dataloader`, or the datamodule's train loader after ``datamodule.train_views = cache``). A sample is the
    dict :class:`~lightning_advkd.TeacherOutputCache` yields: the augmented image (rebuilt from the stored crop and flip
    of that view), the label, ``teacher_features``, ``teacher_logits`` (float32, whatever the storage dtype), any
    ``teacher_attention:<layer>`` maps, and ``teacher_key``, which the distillation modules check against their
    teacher and tap. Training on it is bit-identical to a live run on the same views when the cache builds in the
    training batches (the teacher's output for an image can depend on the other images of its batch through the
    kernels chosen for the batch size; not through the module, whose teacher is frozen in eval mode).

    Args:
        views: the augmented views to cache, with ``num_views`` set (K).
        teacher: the frozen teacher the distillation module will use.
        path: the cache's own folder: built there when empty (and created), resumed when a build was interrupted,
            reused when it holds this cache, refused when it holds another. ``None``: in memory only.
        tap: the teacher's feature tap, as given to the distillation module (``None``: the default tap).
        dtype: storage dtype, ``"float32"`` (exact) or ``"float16"`` (half the storage, not exact).
        batch_size: batch size of the teacher's passes over the views.
        device: where those passes run; default CUDA when available.
        progress: show a progress bar while building.
        attention_layers: teacher layers whose attention maps (``functional.attention_map``, ``(H, W)``) are cached.
        input_key: the key of the image in the samples.
        label_key: the key of the label.

    Raises:
        ValueError: when ``views.num_views`` is unset or ``dtype`` unknown.
        ViewCacheMismatchError: when ``path`` holds a cache built for something else, naming what and the fix.
    """

    def __init__(
        self,
        views: AugmentedViews,
        teacher: nn.Module,
        *,
        path: str | Path | None = None,
        tap: str | None = None,
        dtype: str = "float32",
        batch_size: int = 256,
        device: str | torch.device | None = None,
        progress: bool = False,
        attention_layers: Sequence[str] = (),
        input_key: str = "image",
        label_key: str = "label",
    ) -> None:
        if views.num_views is None:
            raise ValueError("the cache needs a finite number of views: build AugmentedViews with num_views=K")
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
        self.views = views
        self.num_views, self.seed = views.num_views, views.seed
        self.input_key, self.label_key = input_key, label_key
        self.path = Path(path) if path is not None else None
        feature_tap = FeatureTap(teacher, tap, role="teacher")
        map_taps = {name: FeatureTap(teacher, name, role="teacher", pool=False) for name in attention_layers}
        self.meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "teacher_fingerprint": teacher_fingerprint(teacher),
            "teacher_tap": feature_tap.tap,
            "dataset_digest": views.digest,
            "recipe": views.recipe,
            "num_views": int(views.num_views),
            "seed": int(views.seed),
            "dtype": dtype,
            "attention_layers": list(attention_layers),
            "num_samples": len(views),
        }
        self.key = teacher_cache_key(self.meta["teacher_fingerprint"], feature_tap.tap)
        self._key_tensor = torch.tensor(self.key, dtype=torch.int64)
        self._params_type = type(views.params(0, torch.zeros(1, dtype=torch.int64)))
        builder = _Builder(self, teacher, feature_tap, map_taps, batch_size, device, progress)
        try:
            if self.path is None:
                self._arrays: dict[str, np.ndarray] | None = builder.build_in_memory()
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                with file_lock(self.path / LOCK):
                    check_or_write_meta(self.path, self.meta)
                    builder.build_on_disk(self.path)
                self._arrays = None  # opened read-only on first use, in every process (workers included)
        finally:
            for each_tap in (feature_tap, *map_taps.values()):
                each_tap.remove()

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Tensor]:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple[int, int]]) -> SampleBatch:
        """The samples of ``(view, index)`` items, read as one batch per view (see :class:`SampleBatch`)."""
        batch: dict[str, Tensor] = read_in_order(items, self.read)
        batch[TEACHER_KEY] = self._key_tensor.repeat(len(items))
        return SampleBatch(batch, len(items), lambda: split_samples(batch))

    def read(self, view: int, indices: Tensor) -> dict[str, Tensor]:
        """One batch: the images of view ``view`` of the samples ``indices``, their labels and teacher outputs."""
        if not 0 <= view < self.num_views:
            raise IndexError(f"view {view} out of range: this cache holds {self.num_views} views")
        rows = indices.numpy()
        arrays = self.arrays
        params = self._params_type(
            **{field: torch.from_numpy(np.asarray(arrays[PARAM_PREFIX + field][view, rows])) for field in self._fields}
        )
        batch = {self.input_key: self.views.view_batch(view, indices, params)}
        if self.views.labels is not None:
            batch[self.label_key] = self.views.labels[indices]
        for name in self.output_names:
            batch[name] = torch.from_numpy(np.asarray(arrays[name][view, rows], dtype=np.float32))
        return batch

    @property
    def output_names(self) -> list[str]:
        """The names of the cached teacher outputs (the sample keys)."""
        return [TEACHER_FEATURES, TEACHER_LOGITS, *(TEACHER_ATTENTION + name for name in self.meta["attention_layers"])]

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every stored tensor, ``(K, N, ...)``: the outputs and the views' augmentation parameters."""
        if self._arrays is None:
            assert self.path is not None
            names = [*self.output_names, *(PARAM_PREFIX + field for field in self._fields)]
            self._arrays = {name: np.load(self.path / file_name(name), mmap_mode="r") for name in names}
        return self._arrays

    @property
    def nbytes(self) -> int:
        """Storage of the teacher outputs, in bytes (half in fp16); the view parameters add ``K * N * 17`` bytes."""
        return sum(self.arrays[name].nbytes for name in self.output_names)

    @property
    def _fields(self) -> list[str]:
        return [field.name for field in dataclasses.fields(self._params_type)]

    def dataloader(self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None,
                   **loader_kwargs: Any) -> DataLoader:  # fmt: skip
        """A loader where epoch ``e`` reads view ``e % K``; the order ``DataLoader(shuffle=shuffle)`` would give."""
        return view_loader(self, batch_size, shuffle=shuffle, generator=generator, **loader_kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.path is not None:
            state["_arrays"] = None  # reopened in the worker: pickling a memmap would copy it whole
        return state

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "memory"
        return (
            f"{type(self).__name__}({len(self)} samples x {self.num_views} views, seed={self.seed}, "
            f"dtype={self.meta['dtype']}, at {where})"
        )


class _Builder:
    """Runs the teacher over the views, view by view, into memory or into memory-mapped files."""

    def __init__(
        self,
        cache: AugmentedViewCache,
        teacher: nn.Module,
        tap: FeatureTap,
        map_taps: dict[str, FeatureTap],
        batch_size: int,
        device: str | torch.device | None,
        progress: bool,
    ) -> None:
        self.cache, self.teacher, self.tap, self.map_taps = cache, teacher, tap, map_taps
        self.batch_size, self.progress = batch_size, progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = STORAGE_DTYPES[cache.meta["dtype"]]

    def build_in_memory(self) -> dict[str, np.ndarray]:
        return self._build(range(self.cache.num_views), None)

    def build_on_disk(self, path: Path) -> None:
        todo = [view for view in range(self.cache.num_views) if not done_marker(path, view).is_file()]
        if not todo:
            log.info("Reusing the teacher's outputs on %d augmented views at %s", self.cache.num_views, path)
            return
        log.info("Computing the teacher's outputs on views %s of %d at %s", _spans(todo), self.cache.num_views, path)
        self._build(todo, path)

    def _build(self, todo: Sequence[int], path: Path | None) -> dict[str, np.ndarray]:
        """Fill views ``todo``; on disk, mark each view done once its files are flushed."""
        n, k = len(self.cache), self.cache.num_views
        starts = range(0, n, self.batch_size)
        arrays: dict[str, np.ndarray] | None = None
        original = next(self.teacher.parameters()).device
        was_training = self.teacher.training
        self.teacher.eval().to(self.device)
        try:
            with _progress(len(todo) * len(starts), self.progress) as bar, torch.no_grad():
                for view in todo:
                    params = _as_dict(self.cache.views.params(view, torch.arange(n)))
                    for start in starts:
                        indices = torch.arange(start, min(start + self.batch_size, n))
                        batch_params = self.cache._params_type(**{f: v[indices] for f, v in params.items()})
                        outputs = self._teacher_outputs(self.cache.views.view_batch(view, indices, batch_params))
                        if arrays is None:
                            shapes: dict[str, tuple[tuple[int, ...], Any]] = {
                                name: ((k, n, *o.shape[1:]), self.dtype) for name, o in outputs.items()
                            }
                            shapes.update({PARAM_PREFIX + f: ((k, n), v.numpy().dtype) for f, v in params.items()})
                            arrays = allocate(shapes, path)
                        for name, values in outputs.items():
                            arrays[name][view, start : start + len(indices)] = values.numpy()
                        bar.update(1)
                    assert arrays is not None, "no sample to cache"
                    for field, values in params.items():
                        arrays[PARAM_PREFIX + field][view] = values.numpy()
                    if path is not None:
                        for array in arrays.values():
                            array.flush()  # type: ignore[attr-defined]
                        mark_done(path, view)
        finally:
            self.teacher.to(original).train(was_training)
        assert arrays is not None
        return arrays

    def _teacher_outputs(self, inputs: Tensor) -> dict[str, Tensor]:
        with ExitStack() as stack:
            for each_tap in (self.tap, *self.map_taps.values()):
                stack.enter_context(each_tap.capture())
            logits = first_tensor(self.teacher(inputs.to(self.device)))
        assert logits is not None, "the teacher returned no tensor"
        outputs = {TEACHER_FEATURES: self.tap.pop().float().cpu(), TEACHER_LOGITS: logits.float().cpu()}
        for name, map_tap in self.map_taps.items():
            feature_map = map_tap.pop()
            attention = attention_map(feature_map).view(-1, *feature_map.shape[-2:])
            outputs[TEACHER_ATTENTION + name] = attention.float().cpu()
        return outputs


# ---------------------------------------------------------------------------- helpers


def _as_dict(params: Any) -> dict[str, Tensor]:
    return {field.name: getattr(params, field.name) for field in dataclasses.fields(params)}


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc="teacher outputs on augmented views", unit="batch", disable=not enabled)
    try:
        yield bar
    finally:
        bar.close()


def _spans(views: Sequence[int]) -> str:
    return f"{views[0]}..{views[-1]}" if len(views) > 1 else str(views[0])


def cache_folder_name(
    teacher: nn.Module,
    views: AugmentedViews,
    *,
    tap: str | None = None,
    dtype: str = "float32",
    attention_layers: Sequence[str] = (),
) -> str:
    """A folder name unique to a cache's key (teacher, tap, dataset, recipe, K, seed, dtype, attention layers).

    For a shared root: caches of different keys never meet in one folder.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lightning_advkd import AugmentedViews
        >>> from lightning_advkd.data import TensorImageTransform
        >>> views = AugmentedViews(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), None,
        ...                        TensorImageTransform([0.5], [0.5], padding=2), num_views=2)
        >>> cache_folder_name(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), views)[:6]
        'views-'
    """
    feature_tap = FeatureTap(teacher, tap, role="teacher")
    try:
        parts = [teacher_fingerprint(teacher), feature_tap.tap, views.digest, views.recipe, views.num_views, views.seed]
    finally:
        feature_tap.remove()
    layers = [f"attention:{layer}" for layer in attention_layers]  # none: the names of caches without maps are kept
    digest = hashlib.sha256("|".join(map(str, [*parts, dtype, *layers])).encode()).hexdigest()
    return f"views-k{views.num_views}-s{views.seed}-{digest[:16]}"


__all__ = ["AugmentedViewCache", "ViewCacheMismatchError", "cache_folder_name"]
