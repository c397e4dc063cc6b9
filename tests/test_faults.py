"""Fault injection: damaged files, full disks, races, kills and crafted pickles never lose what was saved, run no code,
and say what happened (naming the file or directory)."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import pickle
import tempfile
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_networks import TinyTeacher, make_data
from torch.utils.data import DataLoader, TensorDataset

import lightning_advkd._atomic as atomic
from lightning_advkd import TeacherOutputCache, load_student_state_dict
from lightning_advkd._atomic import CorruptFileError, DiskFullError, load_or_build, verify, write_atomic
from lightning_advkd.app.teachers import cached_teacher, load_teacher, save_teacher
from lightning_advkd.checkpoint_io import AtomicCheckpointIO, NonFiniteCheckpointError, non_finite_tensors
from lightning_advkd.models._checkpoint import read_checkpoint

FORK = multiprocessing.get_context("fork")  # for children that are killed mid-write and run no torch op
# Children that run torch start fresh: a forked copy of a process whose torch thread pools are running can crash.
SPAWN = multiprocessing.get_context("spawn")


# ---- crafted pickles run no code ---------------------------------------------------------------------------------


class _CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: the file appearing is proof that code from the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _crafted_checkpoint(path: Path, marker: Path, *, legacy: bool = False) -> Path:
    checkpoint = {"state_dict": {"student.fc.weight": torch.ones(2, 2)}, "payload": _CreatesFile(marker)}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
@pytest.mark.parametrize(
    "loader",
    [
        pytest.param(load_student_state_dict, id="load_student_state_dict"),
        pytest.param(read_checkpoint, id="read_checkpoint"),
        pytest.param(lambda p: load_teacher(TinyTeacher(), p, how_to_train="x"), id="load_teacher"),
    ],
)
def test_crafted_checkpoint_runs_no_code_and_the_error_names_the_file(tmp_path, loader, legacy) -> None:
    marker = tmp_path / "code-ran"
    path = _crafted_checkpoint(tmp_path / "crafted.ckpt", marker, legacy=legacy)
    with pytest.raises(pickle.UnpicklingError, match=r"crafted\.ckpt.*cannot be read safely.*state_dict"):
        loader(path)
    assert not marker.exists()


def test_crafted_teacher_output_cache_runs_no_code_and_is_rebuilt(tmp_path, caplog) -> None:
    """Even with a matching checksum (an attacker can write one), the cache's reader refuses the pickle."""
    images, labels = make_data(16)
    teacher = TinyTeacher()
    first = TeacherOutputCache(TensorDataset(images, labels), teacher, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    marker = tmp_path / "code-ran"
    write_atomic(entry, lambda f: torch.save({**first.outputs, "payload": _CreatesFile(marker)}, f))
    with caplog.at_level(logging.WARNING):
        again = TeacherOutputCache(TensorDataset(images, labels), teacher, cache_dir=tmp_path)
    assert not marker.exists()
    assert f"Damaged cache entry: {entry} cannot be read (UnpicklingError" in caplog.text
    assert torch.equal(again.logits, first.logits)


# ---- the atomic-write helper --------------------------------------------------------------------------------------


def test_full_disk_names_the_directory_and_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    path = write_atomic(tmp_path / "entry.bin", lambda f: f.write(b"old and good"))

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    message = rf"no space left in {tmp_path} to write entry\.bin.*the previous entry\.bin is intact"
    with pytest.raises(DiskFullError, match=message):
        write_atomic(path, lambda f: f.write(b"new"))
    monkeypatch.undo()
    assert path.read_bytes() == b"old and good"
    verify(path)
    assert atomic.temp_files(path) == []


class _FullAfter:
    """A file whose device fills up after ``limit`` bytes."""

    def __init__(self, file, limit: int) -> None:
        self.file, self.limit, self.written = file, limit, 0

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if self.written + size > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += size
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def test_full_disk_inside_torch_save_is_still_named(tmp_path, monkeypatch) -> None:
    """torch.save turns the OSError of a full disk into a bare RuntimeError; the helper still reports ENOSPC."""
    path = write_atomic(tmp_path / "outputs.pt", lambda f: torch.save({"x": torch.zeros(4)}, f))
    before = path.read_bytes()
    real_open = open
    monkeypatch.setattr(atomic, "open", lambda file, mode="r": _FullAfter(real_open(file, mode), 4096), raising=False)
    with pytest.raises(DiskFullError, match=rf"no space left in {tmp_path} to write outputs\.pt") as info:
        write_atomic(path, lambda f: torch.save({"x": torch.zeros(100_000)}, f))
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before and atomic.temp_files(path) == []
    verify(path)


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temp(tmp_path) -> None:
    path = write_atomic(tmp_path / "entry.bin", lambda f: f.write(b"old"))

    def half_then_crash(f) -> None:
        f.write(b"half of the new")
        raise KeyboardInterrupt  # what Ctrl-C mid-write raises

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_crash)
    assert path.read_bytes() == b"old" and atomic.temp_files(path) == []
    verify(path)


def test_temps_of_a_killed_writer_are_swept_by_the_next_write(tmp_path) -> None:
    path = tmp_path / "entry.bin"
    child = FORK.Process(target=_write_forever, args=(path,))
    child.start()
    deadline = time.monotonic() + 20
    while not atomic.temp_files(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()
    child.join()
    assert atomic.temp_files(path), "the killed writer left its temp file"
    write_atomic(path, lambda f: f.write(b"after"))
    assert atomic.temp_files(path) == [] and path.read_bytes() == b"after"


def _write_forever(path: Path) -> None:
    def slow(f) -> None:
        while True:
            f.write(b"x" * 1024)
            f.flush()
            time.sleep(0.01)

    write_atomic(path, slow)


def test_the_checksum_matches_whichever_content_a_crash_between_the_renames_leaves(tmp_path, monkeypatch) -> None:
    path = write_atomic(tmp_path / "entry.bin", lambda f: f.write(b"old"))
    real_replace = os.replace

    def crash_after_the_data_rename(src, dst) -> None:
        real_replace(src, dst)
        if Path(dst) == path:
            raise KeyboardInterrupt  # killed right after the data file was renamed, before the checksum was finalized

    monkeypatch.setattr(atomic.os, "replace", crash_after_the_data_rename)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, lambda f: f.write(b"new"))
    monkeypatch.undo()
    assert path.read_bytes() == b"new"
    verify(path)  # no false alarm


# ---- caches that heal ---------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _flip_bits(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def _no_checksum(path: Path) -> None:
    atomic.checksum_path(path).unlink()


def _moved_aside(path: Path) -> list[Path]:
    return [p for p in path.parent.glob(f"{path.name}.corrupt-*") if not p.name.endswith(atomic.CHECKSUM_SUFFIX)]


DAMAGE = [
    pytest.param(_truncate, id="truncated"),
    pytest.param(_empty, id="0-byte"),
    pytest.param(_flip_bits, id="64-bytes-flipped"),
    pytest.param(_no_checksum, id="no-checksum"),
]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_teacher_output_cache_is_named_moved_aside_and_rebuilt(tmp_path, caplog, damage) -> None:
    images, labels = make_data(32)
    teacher = TinyTeacher()
    first = TeacherOutputCache(TensorDataset(images, labels), teacher, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    damage(entry)
    with caplog.at_level(logging.WARNING):
        again = TeacherOutputCache(TensorDataset(images, labels), teacher, cache_dir=tmp_path)
    assert f"Damaged cache entry: {entry}" in caplog.text and "rebuilding" in caplog.text
    assert len(_moved_aside(entry)) == 1
    assert torch.equal(again.logits, first.logits) and torch.equal(again.features, first.features)
    verify(entry)  # rebuilt, with its checksum


def test_cache_with_wrong_contents_is_rebuilt(tmp_path, caplog) -> None:
    """A file that is whole but holds outputs for another number of samples (a shifted or partial copy)."""
    images, labels = make_data(32)
    teacher = TinyTeacher()
    first = TeacherOutputCache(TensorDataset(images, labels), teacher, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    write_atomic(entry, lambda f: torch.save({k: v[1:] for k, v in first.outputs.items()}, f))
    with caplog.at_level(logging.WARNING):
        again = TeacherOutputCache(TensorDataset(images, labels), teacher, cache_dir=tmp_path)
    assert f"{entry} holds outputs for" in caplog.text and "expected 32 each" in caplog.text
    assert torch.equal(again.logits, first.logits) and len(_moved_aside(entry)) == 1


def test_full_disk_while_caching_teacher_outputs_names_the_directory(tmp_path, monkeypatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    images, labels = make_data(16)
    with pytest.raises(DiskFullError, match=rf"no space left in {tmp_path / 'cache'}"):
        TeacherOutputCache(TensorDataset(images, labels), TinyTeacher(), cache_dir=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def _count_calls(counter: Path, delay: float = 0.3):
    def record() -> None:
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(delay)  # long enough for the other process to arrive while this one builds

    return record


def _run_together(target, args_per_process: list[tuple], timeout: float = 180) -> None:
    barrier = SPAWN.Barrier(len(args_per_process))
    children = [SPAWN.Process(target=_after_barrier, args=(barrier, target, *args)) for args in args_per_process]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout)
    assert [child.exitcode for child in children] == [0] * len(children)


def _after_barrier(barrier, target, *args) -> None:
    barrier.wait()
    target(*args)


def _build_entry(path: Path, counter: Path, result: Path) -> None:
    record = _count_calls(counter)

    def build() -> bytes:
        record()
        return b"the entry"

    value = load_or_build(path, build=build, write=lambda v, f: f.write(v), read=lambda p: p.read_bytes())
    result.write_bytes(value)


def test_two_processes_racing_for_one_entry_build_it_once(tmp_path) -> None:
    path, counter = tmp_path / "entry.bin", tmp_path / "builds.txt"
    _run_together(_build_entry, [(path, counter, tmp_path / f"result{i}") for i in range(2)])
    assert len(counter.read_text().split()) == 1
    assert (tmp_path / "result0").read_bytes() == (tmp_path / "result1").read_bytes() == b"the entry"


def _build_teacher_outputs(cache_dir: Path, counter: Path, result: Path) -> None:
    import lightning_advkd.teacher_cache as teacher_cache

    compute, record = teacher_cache._teacher_outputs, _count_calls(counter)

    def counted(*args, **kwargs):
        record()
        return compute(*args, **kwargs)

    teacher_cache._teacher_outputs = counted  # in this child process only
    torch.manual_seed(0)
    images, labels = make_data(16)
    cache = TeacherOutputCache(TensorDataset(images, labels), TinyTeacher(), cache_dir=cache_dir)
    torch.save(cache.logits, result)


def test_two_processes_racing_for_one_teacher_output_cache_compute_it_once(tmp_path) -> None:
    counter = tmp_path / "builds.txt"
    _run_together(_build_teacher_outputs, [(tmp_path / "cache", counter, tmp_path / f"logits{i}.pt") for i in range(2)])
    assert len(counter.read_text().split()) == 1
    assert torch.equal(torch.load(tmp_path / "logits0.pt"), torch.load(tmp_path / "logits1.pt"))


def _train_tiny(model: torch.nn.Module, counter: Path | None = None) -> dict:
    if counter is not None:
        _count_calls(counter)()
    with torch.no_grad():
        for i, parameter in enumerate(model.parameters()):
            parameter.fill_(0.1 * (i + 1))
    return {"val_acc": 0.5}


def _obtain_teacher(path: Path, counter: Path, result: Path) -> None:
    model, meta, _ = cached_teacher(TinyTeacher(), path, lambda m: _train_tiny(m, counter), how_to_train="x")
    torch.save({"state": model.state_dict(), "meta": meta}, result)


def test_two_runs_needing_the_same_missing_teacher_train_it_once(tmp_path) -> None:
    path, counter = tmp_path / "teachers" / "tiny-0123.ckpt", tmp_path / "trainings.txt"
    _run_together(_obtain_teacher, [(path, counter, tmp_path / f"teacher{i}.pt") for i in range(2)])
    assert len(counter.read_text().split()) == 1
    first, second = (torch.load(tmp_path / f"teacher{i}.pt") for i in range(2))
    assert first["meta"] == second["meta"] == {"val_acc": 0.5}
    assert all(torch.equal(first["state"][k], second["state"][k]) for k in first["state"])


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_cached_teacher_is_named_moved_aside_and_retrained(tmp_path, caplog, damage) -> None:
    path = tmp_path / "teachers" / "tiny-0123.ckpt"
    trained, meta, was_trained = cached_teacher(TinyTeacher(), path, _train_tiny, how_to_train="x")
    assert was_trained and meta == {"val_acc": 0.5}
    damage(path)
    if damage is not _no_checksum:
        with pytest.raises(CorruptFileError, match=rf"{path} cannot be used as a teacher.*Delete it"):
            load_teacher(TinyTeacher(), path, how_to_train="x")
    with caplog.at_level(logging.WARNING):
        again, _, retrained = cached_teacher(TinyTeacher(), path, _train_tiny, how_to_train="x")
    assert retrained and f"Damaged cached teacher: {path}" in caplog.text
    assert len(_moved_aside(path)) == 1
    assert all(torch.equal(again.state_dict()[k], v) for k, v in trained.state_dict().items())
    _, _, trained_again = cached_teacher(TinyTeacher(), path, None, how_to_train="x")
    assert not trained_again  # the rebuilt file verifies and loads


def test_cached_teacher_is_reused_without_training(tmp_path) -> None:
    path = tmp_path / "tiny.ckpt"
    saved = _with_weights(TinyTeacher())
    save_teacher(saved, path, {"val_acc": 0.9})
    model, meta, trained = cached_teacher(TinyTeacher(), path, None, how_to_train="advkd-train task=teacher")
    assert not trained and meta == {"val_acc": 0.9}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.state_dict().items())
    with pytest.raises(FileNotFoundError, match=r"(?s)no usable cached teacher at .*missing\.ckpt.*advkd-train task=t"):
        cached_teacher(TinyTeacher(), tmp_path / "missing.ckpt", None, how_to_train="advkd-train task=teacher")


def _with_weights(model: torch.nn.Module) -> torch.nn.Module:
    _train_tiny(model)
    return model


# ---- atomic checkpoints -------------------------------------------------------------------------------------------


class _BatchNormNet(L.LightningModule):
    """A LightningModule whose BatchNorm statistics a callback can poison."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyTeacher()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return torch.nn.functional.cross_entropy(self.net(images), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _PoisonBatchNormAtEpoch(L.Callback):
    """What a batch of 1e30-valued inputs does: finite loss, ``running_var = inf``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch == self.epoch:
            module.net.body[1].running_var.fill_(float("inf"))


def _fit(tmp_path: Path, epochs: int, callbacks: list, ckpt_path: str | None = None) -> L.Trainer:
    images, labels = make_data(16)
    trainer = L.Trainer(
        max_epochs=epochs,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            ModelCheckpoint(tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True),
            *callbacks,
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    trainer.fit(_BatchNormNet(), loader, ckpt_path=ckpt_path)
    return trainer


def test_non_finite_state_never_overwrites_a_good_checkpoint(tmp_path) -> None:
    with pytest.raises(
        NonFiniteCheckpointError, match=r"refusing to write checkpoint .*\['net\.body\.1\.running_var'\]"
    ):
        _fit(tmp_path, 3, [_PoisonBatchNormAtEpoch(1)])
    last = tmp_path / "ckpt" / "last.ckpt"
    checkpoint = AtomicCheckpointIO().load_checkpoint(last)
    assert checkpoint["epoch"] == 0 and not non_finite_tensors(checkpoint)
    assert not atomic.temp_files(last)


def test_damaged_checkpoint_is_named_on_resume(tmp_path) -> None:
    _fit(tmp_path, 1, [])
    last = tmp_path / "ckpt" / "last.ckpt"
    verify(last)
    _flip_bits(last)
    with pytest.raises(CorruptFileError, match=rf"{last} cannot be loaded: does not match its checksum"):
        _fit(tmp_path, 2, [], ckpt_path=str(last))
    _no_checksum(last)  # without a checksum, truncation still surfaces in torch.load, and the error names the file
    _truncate(last)
    with pytest.raises(CorruptFileError, match=rf"{last} cannot be loaded, it is damaged"):
        AtomicCheckpointIO().load_checkpoint(last)


def test_crafted_checkpoint_runs_no_code_through_the_checkpoint_io(tmp_path) -> None:
    marker = tmp_path / "code-ran"
    path = _crafted_checkpoint(tmp_path / "crafted.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError, match=r"crafted\.ckpt cannot be loaded with torch\.load"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_non_finite_checkpoint_is_refused_over_the_good_one_naming_the_tensor(tmp_path) -> None:
    path, io = tmp_path / "last.ckpt", AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    bad = {"state_dict": {"w": torch.tensor([1.0, float("nan"), 2.0])}, "epoch": 2, "optimizer_states": []}
    with pytest.raises(
        NonFiniteCheckpointError, match=r"state_dict\['w'\]; the previous last\.ckpt was left as it was"
    ):
        io.save_checkpoint(bad, path)
    assert io.load_checkpoint(path)["epoch"] == 1
    AtomicCheckpointIO(allow_non_finite=True).save_checkpoint(bad, path)  # the opt-in for debugging
    assert io.load_checkpoint(path)["epoch"] == 2


class _ExplodesWhenPickled:
    def __reduce__(self) -> tuple:
        raise KeyboardInterrupt  # a kill (Ctrl-C) in the middle of torch.save, after the tensors were written


def test_a_save_interrupted_midway_keeps_the_old_checkpoint_and_no_temp(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "epoch": 1}, path)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(100_000)}, "z": _ExplodesWhenPickled()}, path)
    assert io.load_checkpoint(path)["epoch"] == 1 and atomic.temp_files(path) == []


def _save_big_checkpoints_forever(path: Path, tmpdir: Path) -> None:
    tempfile.tempdir = str(tmpdir)  # $TMPDIR on "another filesystem": nothing may be written there
    io = AtomicCheckpointIO()
    epoch = 2
    while True:
        io.save_checkpoint({"state_dict": {"w": torch.full((2_000_000,), float(epoch))}, "epoch": epoch}, path)
        epoch += 1


def test_sigkill_during_checkpoint_writes_never_damages_the_last_one(tmp_path) -> None:
    path, elsewhere = tmp_path / "ckpt" / "last.ckpt", tmp_path / "tmpdir"
    elsewhere.mkdir()
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.full((2_000_000,), 1.0)}, "epoch": 1}, path)
    for _ in range(3):
        child = FORK.Process(target=_save_big_checkpoints_forever, args=(path, elsewhere))
        child.start()
        deadline = time.monotonic() + 30
        while not atomic.temp_files(path) and time.monotonic() < deadline:
            time.sleep(0.002)
        child.kill()  # SIGKILL, mid-write: a temp file exists
        child.join()
        checkpoint = io.load_checkpoint(path)  # verified against its checksum
        assert torch.all(checkpoint["state_dict"]["w"] == checkpoint["epoch"])
    assert list(elsewhere.iterdir()) == []
    io.save_checkpoint({"state_dict": {"w": torch.ones(1)}, "epoch": 9}, path)
    assert atomic.temp_files(path) == [], "the next save sweeps the temp files of killed writers"
