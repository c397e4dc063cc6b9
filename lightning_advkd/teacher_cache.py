"""Teacher-output cache: compute the frozen teacher's features and logits once per sample, reuse them every epoch.

Exact when the student's inputs are not randomly augmented (the teacher is frozen and in eval mode, so its output
for a given input never changes). It removes the teacher forward from every training step, which dominates the step
time of small students. The cache is keyed by the teacher's weights, its feature tap and the bytes of every input,
so outputs of another teacher or another dataset can never be mixed in: the distillation modules check the key
carried by every batch.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.utils.data import TensorDataset
    >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> cache = TeacherOutputCache(TensorDataset(torch.randn(10, 4), torch.arange(10) % 3), teacher)
    >>> sorted(cache[0])
    ['image', 'label', 'teacher_features', 'teacher_key', 'teacher_logits']
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_advkd._atomic import CorruptFileError, load_or_build
from lightning_advkd.batch import split_batch
from lightning_advkd.collate import SampleBatch, split_samples
from lightning_advkd.features import FeatureTap
from lightning_advkd.fingerprint import teacher_fingerprint
from lightning_advkd.functional import attention_map

TEACHER_FEATURES = "teacher_features"
TEACHER_LOGITS = "teacher_logits"
TEACHER_KEY = "teacher_key"
TEACHER_ATTENTION = "teacher_attention:"  # + layer name: the teacher's (H, W) attention map at that layer


def cached_attention(batch: Any, layers: Sequence[str]) -> list[Tensor] | None:
    """The teacher's cached ``(N, H, W)`` attention maps at ``layers``, or ``None`` for a batch without cached outputs.

    Raises:
        ValueError: when the batch holds cached teacher outputs but not the attention maps of every layer asked for.
    """
    if not (isinstance(batch, Mapping) and TEACHER_LOGITS in batch):
        return None
    missing = [layer for layer in layers if TEACHER_ATTENTION + layer not in batch]
    if missing:
        raise ValueError(
            f"the teacher-output cache holds no attention maps of teacher layers {missing}: build it with "
            f"attention_layers={missing} (TeacherOutputCache, AugmentedViewCache)"
        )
    return [batch[TEACHER_ATTENTION + layer] for layer in layers]


def teacher_cache_key(teacher_fingerprint: str, tap: str) -> int:
    """A signed 64-bit integer naming one teacher (weights and feature tap), carried by every cached sample."""
    digest = hashlib.sha256(f"{teacher_fingerprint}|{tap}".encode()).digest()
    return int.from_bytes(digest[:8], "little", signed=True)


class TeacherOutputCache(Dataset):
    """Wraps a dataset; each sample becomes a dict with the input, the label (if any) and the teacher's outputs.

    Args:
        dataset: a dataset without random augmentation (checked: its first sample is read twice and must match).
        teacher: the frozen teacher the distillation module will use.
        tap: the teacher's feature tap, as given to the distillation module (``None``: the default tap).
        cache_dir: folder for an on-disk copy of the outputs, reused by later runs with the same teacher and inputs;
            ``None`` keeps them in memory only. The copy is written atomically with a SHA-256 checksum beside it
            (``<file>.sha256``) and verified when read: a damaged copy (truncated, empty, bit-flipped) is reported by
            path, moved aside as ``<file>.corrupt-<time>`` and rebuilt. Concurrent runs that need the same missing copy
            compute it once (a file lock): the others wait and read it.
        batch_size: batch size of the one pass that computes the outputs.
        device: where that pass runs; default CUDA when available.
        keep_inputs: keep the (transformed) inputs in memory too, so training reads tensors instead of decoding and
            transforming images every epoch.
        input_key: the key of the input in the samples it yields (the module's ``input_key``).
        label_key: the key of the label.
        progress: show a progress bar during the pass.
        attention_layers: teacher layers whose attention maps (``functional.attention_map``, shape ``(H, W)``) are
            cached too, for attention transfer.

    Raises:
        ValueError: if the dataset is randomly augmented.
        lightning_advkd._atomic.DiskFullError: if the on-disk copy cannot be written for lack of space; names the
            folder (any previous copy is left intact).
    """

    def __init__(
        self,
        dataset: Dataset,
        teacher: nn.Module,
        *,
        tap: str | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        keep_inputs: bool = True,
        input_key: str = "image",
        label_key: str = "label",
        progress: bool = False,
        attention_layers: Sequence[str] = (),
    ) -> None:
        _check_not_augmented(dataset, input_key, label_key)
        self.dataset = dataset
        self.input_key, self.label_key = input_key, label_key
        feature_tap = FeatureTap(teacher, tap, role="teacher")
        map_taps = {name: FeatureTap(teacher, name, role="teacher", pool=False) for name in attention_layers}
        self.key = teacher_cache_key(teacher_fingerprint(teacher), feature_tap.tap)
        try:
            inputs, labels, input_digest = _read_all(dataset, batch_size, input_key, label_key, progress)
            path = _cache_path(cache_dir, self.key, input_digest, attention_layers)

            def compute() -> dict[str, Tensor]:
                return _teacher_outputs(teacher, feature_tap, map_taps, inputs, batch_size, device, progress)

            if path is None:
                outputs = compute()
            else:
                expected = {TEACHER_FEATURES, TEACHER_LOGITS, *(TEACHER_ATTENTION + name for name in map_taps)}
                outputs = load_or_build(
                    path,
                    build=compute,
                    write=lambda value, f: torch.save(value, f),
                    read=lambda file: _read_outputs(file, expected, len(inputs)),
                )
        finally:
            for each_tap in (feature_tap, *map_taps.values()):
                each_tap.remove()
        self.outputs = outputs
        self.inputs = inputs if keep_inputs else None
        self.labels = labels
        self._key_tensor = torch.tensor(self.key, dtype=torch.int64)

    @property
    def features(self) -> Tensor:
        """The teacher's pooled features, ``(N, C)``."""
        return self.outputs[TEACHER_FEATURES]

    @property
    def logits(self) -> Tensor:
        """The teacher's logits, ``(N, K)``."""
        return self.outputs[TEACHER_LOGITS]

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if self.inputs is not None:
            image = self.inputs[index]
        else:
            image, _ = split_batch(self.dataset[index], self.input_key, self.label_key)
        sample = {self.input_key: image, TEACHER_KEY: self._key_tensor}
        sample.update({name: values[index] for name, values in self.outputs.items()})
        if self.labels is not None:
            sample[self.label_key] = self.labels[index]
        return sample

    def __getitems__(self, indices: list[int]) -> SampleBatch | list[dict[str, Tensor]]:
        """The samples at ``indices``, sliced as one batch when the inputs are held as a tensor (see SampleBatch)."""
        if self.inputs is None:
            return [self[index] for index in indices]
        rows = torch.as_tensor(indices, dtype=torch.int64)
        batch = {self.input_key: self.inputs[rows], TEACHER_KEY: self._key_tensor.repeat(len(indices))}
        batch.update({name: values[rows] for name, values in self.outputs.items()})
        if self.labels is not None:
            batch[self.label_key] = self.labels[rows]
        return SampleBatch(batch, len(indices), lambda: split_samples(batch))


def _check_not_augmented(dataset: Dataset, input_key: str, label_key: str) -> None:
    first, _ = split_batch(_as_batch(dataset[0]), input_key, label_key)
    again, _ = split_batch(_as_batch(dataset[0]), input_key, label_key)
    if not torch.equal(first, again):
        raise ValueError(
            "the dataset returns a different input each time it is read (random augmentation), so cached teacher "
            "outputs would not match the student's inputs: build the dataset without augmentation (augment=False), "
            "or train without the teacher-output cache"
        )


def _as_batch(sample: Any) -> Any:
    return sample if isinstance(sample, (Tensor, dict, tuple, list)) else (sample,)


def _read_all(
    dataset: Dataset, batch_size: int, input_key: str, label_key: str, progress: bool
) -> tuple[Tensor, Tensor | None, str]:
    """Every input (and label) in order, and a digest of the inputs' bytes."""
    digest = hashlib.sha256()
    inputs, labels = [], []
    # A private generator: building the cache must not move the global RNG (seeded runs stay reproducible).
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    for batch in _maybe_progress(loader, progress, "reading inputs"):
        x, y = split_batch(batch, input_key, label_key)
        x = x.contiguous()
        digest.update(str((x.dtype, tuple(x.shape[1:]))).encode())
        digest.update(x.numpy().tobytes())
        inputs.append(x)
        if y is not None:
            labels.append(y)
    return torch.cat(inputs), torch.cat(labels) if labels else None, digest.hexdigest()


def _teacher_outputs(
    teacher: nn.Module,
    tap: FeatureTap,
    map_taps: dict[str, FeatureTap],
    inputs: Tensor,
    batch_size: int,
    device: Any,
    progress: bool,
) -> dict[str, Tensor]:
    target = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    original = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval().to(target)
    chunks: dict[str, list[Tensor]] = {TEACHER_FEATURES: [], TEACHER_LOGITS: []}
    chunks.update({TEACHER_ATTENTION + name: [] for name in map_taps})
    try:
        with torch.no_grad():
            for start in _maybe_progress(range(0, len(inputs), batch_size), progress, "teacher outputs"):
                with ExitStack() as stack:
                    for each_tap in (tap, *map_taps.values()):
                        stack.enter_context(each_tap.capture())
                    out = teacher(inputs[start : start + batch_size].to(target))
                chunks[TEACHER_FEATURES].append(tap.pop().float().cpu())
                chunks[TEACHER_LOGITS].append((out if isinstance(out, Tensor) else out[0]).float().cpu())
                for name, map_tap in map_taps.items():
                    feature_map = map_tap.pop()
                    attention = attention_map(feature_map).view(-1, *feature_map.shape[-2:])
                    chunks[TEACHER_ATTENTION + name].append(attention.float().cpu())
    finally:
        teacher.to(original).train(was_training)
    return {name: torch.cat(values) for name, values in chunks.items()}


def _read_outputs(path: Path, expected: set[str], n: int) -> dict[str, Tensor]:
    outputs = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(outputs, dict) or set(outputs) != expected:
        found = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise CorruptFileError(path, f"holds {found}, expected the teacher outputs {sorted(expected)}")
    lengths = {name: len(values) for name, values in outputs.items()}
    if any(length != n for length in lengths.values()):
        raise CorruptFileError(path, f"holds outputs for {lengths} samples, expected {n} each")
    return outputs


def _cache_path(
    cache_dir: str | Path | None, key: int, input_digest: str, attention_layers: Sequence[str]
) -> Path | None:
    """One file per teacher, inputs and set of attention layers (a cache without maps keeps its historical name)."""
    if cache_dir is None:
        return None
    if attention_layers:
        input_digest = hashlib.sha256("|".join([input_digest, *attention_layers]).encode()).hexdigest()
    return Path(cache_dir) / f"teacher-outputs-{key & (2**64 - 1):016x}-{input_digest[:16]}.pt"


def _maybe_progress(iterable: Any, progress: bool, description: str) -> Any:
    if not progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=description)
