"""Teachers of a run: loaded from a given checkpoint, or trained once with labels and cached by their recipe.

A cached teacher lives at ``<cache_dir>/teachers/<arch>-<key>.ckpt``. The key hashes everything that decides the
teacher's weights: the dataset (its config without loader-only options, ``data_dir`` made absolute), the architecture,
the training recipe (the ``SupervisedClassifier`` options and the Trainer settings that change the result: epochs,
batch limits, precision, devices, ...) and the seed. A teacher of another dataset, architecture or recipe therefore
never stands in for the one asked for; it gets its own file. The file is a Lightning-style checkpoint (weights under
``model.``), readable by :func:`lightning_advkd.models.load_weights` and by ``pair.teacher.checkpoint=<file>``, with
the recipe beside it in ``<arch>-<key>.json`` and its SHA-256 in ``<arch>-<key>.ckpt.sha256``.

:func:`cached_teacher` is the cache's whole protocol (see :mod:`lightning_advkd._atomic`): files are written atomically,
verified on read (a damaged teacher is reported by path, moved aside and retrained, never used), and a file lock makes
concurrent runs that need the same missing teacher train it once while the others wait and load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from lightning_advkd._atomic import (
    CorruptFileError,
    checksum_path,
    file_lock,
    quarantine,
    sha256_file,
    verify,
    write_atomic,
)
from lightning_advkd.app.compat import IncompatibleConfigError
from lightning_advkd.models import CheckpointMismatchError, load_weights
from lightning_advkd.supervised import MODEL_PREFIX

log = logging.getLogger(__name__)

#: Where the reference teachers shipped with the package live (package data): ``<name>.json`` beside its weights.
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "weights"
#: Key of the recipe and results inside a cached teacher checkpoint.
TEACHER_META_KEY = "lightning_advkd_teacher"
#: Bump when the meaning of a recipe changes, so old cache entries are not reused.
RECIPE_VERSION = 1
#: Datamodule options that change how data is loaded but not what a model learns from it.
LOADER_ONLY_KEYS = frozenset({"eval_batch_size", "num_workers", "pin_memory", "persistent_workers"})
#: Trainer options that change the trained weights.
TRAINER_RESULT_KEYS = (
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "max_time",
    "limit_train_batches",
    "fast_dev_run",
    "overfit_batches",
    "precision",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "deterministic",
    "devices",
    "num_nodes",
)


class MissingTeacherError(FileNotFoundError):
    """The teacher checkpoint a run needs does not exist."""


@dataclasses.dataclass(frozen=True)
class ReferenceTeacher:
    """A trained teacher shipped with the package, and what it is for (``lightning_advkd/weights/<name>.json``).

    Attributes:
        name: Its name (``pair.teacher.reference``).
        path: The weights (a plain ``state_dict``).
        sha256: The weights' SHA-256, verified before every load.
        architecture: Registry name of the architecture.
        num_classes: Classes it predicts.
        in_chans: Input channels.
        dataset: The dataset config's ``name``.
        test_labels_sha256: Digest of the dataset's test labels (:func:`labels_digest`): it stands in for a
            teacher trained on that data only when the run's data is the same.
        meta: The whole metadata file (recipe, command, test accuracy).
    """

    name: str
    path: Path
    sha256: str
    architecture: str
    num_classes: int
    in_chans: int
    dataset: str
    test_labels_sha256: str
    meta: dict[str, Any]

    def mismatch(
        self, *, dataset: str, model: Mapping[str, Any], num_classes: int, in_chans: int, datamodule: Any
    ) -> str:
        """Why this teacher cannot serve a run (``""`` when it can): another dataset, architecture or data.

        Args:
            dataset: The run's dataset name.
            model: The teacher's model config node (``name`` and keyword arguments; ``_target_`` ignored).
            num_classes: Classes of the run.
            in_chans: Input channels of the run.
            datamodule: The run's datamodule, whose test labels must be those the teacher was tested on.
        """
        arch = {k: v for k, v in model.items() if k != "_target_"}
        wanted = {"dataset": dataset, "architecture": arch, "num_classes": num_classes, "in_chans": in_chans}
        mine = {"dataset": self.dataset, "architecture": {"name": self.architecture}}
        for key, value in wanted.items():
            if mine.get(key, getattr(self, key)) != value:
                return f"it is for {key} {mine.get(key, getattr(self, key))!r}, the run has {value!r}"
        if labels_digest(datamodule) != self.test_labels_sha256:
            return f"the data in {getattr(datamodule, 'data_dir', '?')} is not the {self.dataset} it was tested on"
        return ""


def reference_teacher(name: str) -> ReferenceTeacher:
    """The reference teacher ``name`` shipped in ``lightning_advkd/weights``.

    Raises:
        ValueError: When no such teacher ships with the package (the message lists those that do).
    """
    meta_path = REFERENCE_DIR / f"{name}.json"
    if not meta_path.is_file():
        shipped = sorted(p.stem for p in REFERENCE_DIR.glob("*.json"))
        raise ValueError(f"no reference teacher {name!r} ships with lightning_advkd; shipped: {shipped}")
    meta = json.loads(meta_path.read_text())
    fields = ("sha256", "architecture", "num_classes", "in_chans", "dataset", "test_labels_sha256")
    return ReferenceTeacher(name=name, path=REFERENCE_DIR / meta["file"], meta=meta, **{k: meta[k] for k in fields})


def load_reference_teacher(model: nn.Module, reference: ReferenceTeacher) -> nn.Module:
    """Load the reference teacher's weights into ``model`` after checking the file's SHA-256.

    Raises:
        CorruptFileError: When the file's SHA-256 differs from the one recorded with it (damaged or replaced);
            the message says how to get an intact copy or train a teacher instead.
    """
    found = sha256_file(reference.path)
    if found != reference.sha256:
        raise CorruptFileError(
            reference.path,
            f"has SHA-256 {found}, expected {reference.sha256}: the reference teacher is damaged or was replaced. "
            "Reinstall lightning_advkd, or train a teacher instead with teacher_training.retrain=true.",
        )
    load_weights(model, reference.path)
    return model


def labels_digest(datamodule: Any) -> str | None:
    """SHA-256 of a datamodule's test labels in order (``None`` when it cannot read them): identifies the data.

    Reads the test set only (for Fashion-MNIST 10,000 images, a fraction of a second).
    """
    try:
        datamodule.check_files()
        targets = getattr(datamodule.load_test_dataset(), "targets", None)
    except (OSError, ValueError, RuntimeError, NotImplementedError, AssertionError):
        return None
    if targets is None:
        return None
    return hashlib.sha256(torch.as_tensor(targets).to(torch.int64).numpy().tobytes()).hexdigest()


def teacher_recipe(
    *,
    dataset: Mapping[str, Any],
    model: Mapping[str, Any],
    module: Mapping[str, Any],
    trainer: Mapping[str, Any],
    seed: int,
    num_classes: int,
    in_chans: int,
) -> dict[str, Any]:
    """The plain-data description of how a teacher is trained; equal recipes give equal teachers.

    Args:
        dataset: The teacher's datamodule config (after the teacher's own overrides such as ``augment``).
        model: The architecture's config node (``name`` and keyword arguments).
        module: The ``SupervisedClassifier`` config node.
        trainer: The teacher's Trainer config (only :data:`TRAINER_RESULT_KEYS` are kept).
        seed: The run's seed.
        num_classes: Classes of the dataset.
        in_chans: Channels of the dataset's images.

    Example:
        >>> recipe = teacher_recipe(dataset={"_target_": "D", "data_dir": "/d", "num_workers": 2},
        ...     model={"name": "resnet8"}, module={"lr": 0.1}, trainer={"max_epochs": 1, "logger": False},
        ...     seed=0, num_classes=10, in_chans=1)
        >>> sorted(recipe["dataset"]), sorted(k for k, v in recipe["trainer"].items() if v is not None)
        (['_target_', 'data_dir'], ['max_epochs'])
    """
    data = {k: v for k, v in dataset.items() if k not in LOADER_ONLY_KEYS}
    if data.get("data_dir") is not None:
        data["data_dir"] = str(Path(str(data["data_dir"])).expanduser().resolve())
    if data.get("val_dir") is not None:
        data["val_dir"] = str(Path(str(data["val_dir"])).expanduser().resolve())
    return {
        "version": RECIPE_VERSION,
        "dataset": data,
        "model": dict(model),
        "num_classes": num_classes,
        "in_chans": in_chans,
        "module": dict(module),
        "trainer": {key: trainer.get(key) for key in TRAINER_RESULT_KEYS},
        "seed": seed,
    }


def recipe_key(recipe: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the recipe's canonical JSON.

    Example:
        >>> recipe_key({"a": 1, "b": [1, 2]}) == recipe_key({"b": [1, 2], "a": 1})
        True
    """
    canonical = json.dumps(recipe, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cached_teacher_path(cache_dir: str | Path, arch: str, key: str) -> Path:
    """``<cache_dir>/teachers/<arch>-<key>.ckpt`` (the architecture name made file-safe)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", arch)
    return Path(cache_dir).expanduser() / "teachers" / f"{safe}-{key}.ckpt"


def save_teacher(model: nn.Module, path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write the teacher's weights (under ``model.``) and ``meta`` to ``path`` atomically, and ``meta`` as JSON beside.

    The file appears complete or not at all (a temp file in the same folder, fsynced, renamed over ``path``), with its
    SHA-256 in ``<path>.sha256``: an interrupted run never leaves a half-written teacher for the next run to load.

    Raises:
        lightning_advkd._atomic.DiskFullError: When the disk is full; names the folder, a previous file is intact.
    """
    path = Path(path)
    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint = {"state_dict": state, TEACHER_META_KEY: dict(meta)}
    write_atomic(path, lambda f: torch.save(checkpoint, f))
    text = json.dumps(dict(meta), indent=2, sort_keys=True, default=str) + "\n"
    write_atomic(path.with_suffix(".json"), lambda f: f.write(text.encode()), checksum=False)
    return path


def read_teacher_meta(path: str | Path) -> dict[str, Any]:
    """The recipe and results stored with a cached teacher (empty for checkpoints written elsewhere)."""
    sidecar = Path(path).with_suffix(".json")
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    return {}


def load_teacher(model: nn.Module, path: str | Path, *, how_to_train: str) -> nn.Module:
    """Load a teacher checkpoint into ``model`` (any format :func:`~lightning_advkd.models.load_weights` reads).

    Args:
        model: The teacher architecture, built for the dataset.
        path: The checkpoint.
        how_to_train: The command that trains and caches this teacher, quoted in the error when ``path`` is missing.

    Raises:
        MissingTeacherError: When ``path`` is not a file; the message says how to train one.
        CorruptFileError: When ``path`` has a checksum file (a cached teacher) and does not match it.
        IncompatibleConfigError: When the checkpoint's weights do not fit the architecture built for the dataset
            (another class count or input channels, another architecture).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingTeacherError(
            f"teacher checkpoint {path} does not exist. Train the teacher first with\n  {how_to_train}\n"
            "which saves it in the teacher cache, or set pair.teacher.checkpoint=null to train it (once, then cached) "
            "as part of the distillation run."
        )
    if checksum_path(path).is_file():
        try:
            verify(path)
        except CorruptFileError as err:
            raise CorruptFileError(
                path,
                f"cannot be used as a teacher: {str(err).removeprefix(str(path)).strip()}. Delete it and "
                f"{checksum_path(path).name} to retrain it (a run that trains teachers moves it aside and retrains "
                "it by itself), or point pair.teacher.checkpoint to an intact copy.",
            ) from err
    try:
        load_weights(model, path)
    except CheckpointMismatchError as err:
        raise IncompatibleConfigError(
            f"teacher checkpoint {path} does not fit the teacher built for this dataset "
            f"({getattr(model, 'num_classes', '?')} classes, {getattr(model, 'in_chans', '?')} input channels): it "
            f"was trained for another dataset or architecture.\n{err}"
        ) from err
    return model


def cached_teacher(
    model: nn.Module,
    path: str | Path,
    train: Callable[[nn.Module], Mapping[str, Any]] | None,
    *,
    how_to_train: str,
    retrain: bool = False,
    save: bool = True,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """The teacher cached at ``path`` (verified), else trained now by ``train`` and cached: once, however many runs ask.

    On global rank 0 the check-train-save sequence holds a file lock (``<path>.lock``), so a second run that needs the
    same missing teacher waits for the first to finish and then loads its file instead of training it again. A cached
    file that fails its checksum (or has none: cut short, or written before checksums) is reported with a warning
    naming it, moved aside as ``<name>.corrupt-<time>`` and retrained. Under DDP the other ranks take no lock (rank 0
    holds it while it waits for them in the training): they load a verified file, or train along with rank 0.

    Args:
        model: The teacher architecture, built for the dataset; filled in place.
        path: The cache entry (:func:`cached_teacher_path`).
        train: Trains ``model`` in place and returns the metadata to store (recipe, accuracy, ...); ``None`` when this
            run may not train (a missing teacher is then a :class:`MissingTeacherError`).
        how_to_train: The command that trains this teacher, quoted when it is missing and ``train`` is ``None``.
        retrain: Train even when a valid file exists (the new file replaces it).
        save: Cache the trained teacher (only global rank 0 writes).

    Returns:
        ``(model, meta, trained)``: the filled model, its stored or new metadata, and whether it was trained now.

    Raises:
        MissingTeacherError: When there is no usable file and ``train`` is ``None``.
        lightning_advkd._atomic.DiskFullError: When the trained teacher cannot be saved for lack of space.
    """
    path = Path(path).expanduser()
    rank_zero = rank_zero_only.rank == 0  # type: ignore[attr-defined]  # Lightning sets .rank on the function at import
    with file_lock(path) if rank_zero and save else contextlib.nullcontext():
        if path.is_file() and not retrain:
            try:
                verify(path)
                load_teacher(model, path, how_to_train=how_to_train)
                return model, read_teacher_meta(path), False
            except CorruptFileError as err:
                aside = quarantine(path) if rank_zero and save else None
                where = f"moved aside to {aside.name}" if aside is not None else "left in place on this rank"
                log.warning("Damaged cached teacher: %s; %s, training it again", err, where)
        if train is None:
            raise MissingTeacherError(
                f"no usable cached teacher at {path}. Train it with the same overrides as the run that needs it:\n  "
                f"{how_to_train}\nor give pair.teacher.checkpoint=<file>."
            )
        meta = dict(train(model))
        if save and rank_zero:
            save_teacher(model, path, meta)
        return model, meta, True


__all__ = [
    "REFERENCE_DIR",
    "MissingTeacherError",
    "ReferenceTeacher",
    "cached_teacher",
    "cached_teacher_path",
    "labels_digest",
    "load_reference_teacher",
    "load_teacher",
    "read_teacher_meta",
    "recipe_key",
    "reference_teacher",
    "save_teacher",
    "teacher_recipe",
]
