"""Files that appear whole or not at all, carry a checksum, heal when damaged, and are built once under a lock.

The one protocol every cache of the package uses (teacher outputs, teacher checkpoints, view caches):

* :func:`write_atomic` writes through a temp file in the target's own directory (never ``$TMPDIR``, which may be
  another filesystem: a rename across filesystems is a copy a kill can cut short), flushes and fsyncs it, then
  ``os.replace``-s it over the target. A crash at any point leaves the old file or the new one, never a mix; a full
  disk is a :class:`DiskFullError` naming the directory, with the old file untouched and no temp file left.
* The checksum (``<name>.sha256``, the ``sha256sum`` format) is verified by :func:`verify`; a file that does not match
  it is a :class:`CorruptFileError` naming the file, and :func:`quarantine` moves it aside as
  ``<name>.corrupt-<time>`` for inspection.
* :func:`file_lock` is an advisory ``fcntl.flock`` lock on ``<name>.lock``, so that concurrent processes build an
  entry once: the first builds, the others wait and then read what it wrote.
* :func:`load_or_build` ties them together.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> entry = load_or_build(folder / "squares.txt", build=lambda: "1 4 9", write=lambda v, f: f.write(v.encode()),
    ...                       read=lambda p: p.read_text())
    >>> entry, verify(folder / "squares.txt")
    ('1 4 9', None)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import pickle
import secrets
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKSUM_SUFFIX = ".sha256"
LOCK_SUFFIX = ".lock"
_TEMP_TAG = ".tmp-"
_HOST = socket.gethostname().replace("-", "_") or "host"
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
# What reading a damaged file raises (torch: RuntimeError/EOFError/UnpicklingError; numpy/json: ValueError).
READ_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    RuntimeError,
    EOFError,
    KeyError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class CorruptFileError(RuntimeError):
    """A file does not match its checksum (truncated, overwritten, bit-flipped), has none, or cannot be read.

    Attributes:
        path: The file.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path} {reason}")


class DiskFullError(OSError):
    """No space (or quota) left to write a file; the message names the directory, the previous file is intact."""


def checksum_path(path: str | Path) -> Path:
    """``<path>.sha256``, where :func:`write_atomic` keeps the checksum of ``path``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any], *, checksum: bool = True) -> Path:
    """Write a file so that it appears complete or not at all, and (by default) record its checksum.

    Args:
        path: The target; its directory is created if needed.
        write: Writes the content to the binary file object it is given (``lambda f: torch.save(obj, f)``).
        checksum: Also write ``<path>.sha256``, for :func:`verify`.

    Returns:
        ``path``.

    Raises:
        DiskFullError: When the device or quota is full; names the directory. ``path`` keeps its previous content.
    """
    path = Path(path)
    directory = path.parent
    with _naming_full_disk(path):
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = _write_temp(path, write)
    try:
        with _naming_full_disk(path):
            if checksum:
                digest = sha256_file(tmp)
                sums = checksum_path(path)
                # Both digests are accepted while the file is being replaced, so a crash between the two renames
                # leaves a checksum file that still matches whichever content the file has.
                previous = _read_digests(sums) if path.exists() else []
                _replace_small(sums, _checksum_text(path.name, [digest, *previous[:1]]))
            os.replace(tmp, path)
            if checksum:
                _replace_small(sums, _checksum_text(path.name, [digest]))
            _fsync_directory(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def verify(path: str | Path) -> None:
    """Check a file against the checksum :func:`write_atomic` recorded.

    Raises:
        CorruptFileError: When the file does not match, or has no checksum file; names the file.
    """
    path = Path(path)
    sums = checksum_path(path)
    if not sums.is_file():
        raise CorruptFileError(path, f"has no checksum file {sums.name} (cut short, or written by an older version)")
    expected = _read_digests(sums)
    if sha256_file(path) not in expected:
        size = path.stat().st_size
        raise CorruptFileError(
            path, f"does not match its checksum in {sums.name} ({size} bytes): truncated, overwritten or bit-flipped"
        )


def quarantine(path: str | Path) -> Path | None:
    """Move a damaged file (and its checksum) aside as ``<name>.corrupt-<time>``; ``None`` if it is already gone."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    with contextlib.suppress(FileNotFoundError):
        os.replace(checksum_path(path), aside.with_name(aside.name + CHECKSUM_SUFFIX))
    return aside


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` (``fcntl.flock``; waits while another process holds it).

    The kernel drops the lock when its holder dies, so a killed builder never blocks the others for good. The lock file
    stays (deleting it would let two processes lock two different files).
    """
    lock_path = Path(path).with_name(Path(path).name + LOCK_SUFFIX)
    with _naming_full_disk(Path(path)):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            log.info("Waiting for %s: %s is building it", Path(path), holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_or_build(
    path: str | Path,
    *,
    build: Callable[[], T],
    write: Callable[[T, IO[bytes]], Any],
    read: Callable[[Path], T],
    lock: bool = True,
) -> T:
    """Read a verified cache entry, or build it once and write it atomically with its checksum.

    A damaged entry (checksum mismatch, no checksum, or ``read`` failing with one of :data:`READ_ERRORS`) is reported
    with a warning naming it, moved aside by :func:`quarantine` and rebuilt. With ``lock`` the whole check-build-write
    runs under :func:`file_lock`, so concurrent processes asking for a missing entry build it once: the first builds,
    the others wait, then find it and read it.

    Args:
        path: The entry.
        build: Computes the value when the entry is missing or damaged.
        write: Writes a value to a binary file object.
        read: Reads the value back from the (verified) file; may raise :class:`CorruptFileError` on content it rejects.
        lock: Serialize with other processes through :func:`file_lock`.

    Raises:
        DiskFullError: When the entry cannot be written for lack of space; names the directory.
    """
    path = Path(path)
    damaged: tuple[type[Exception], ...] = (CorruptFileError, *READ_ERRORS)  # named: mypy rejects `*` in an except
    with file_lock(path) if lock else contextlib.nullcontext():
        if path.exists():
            try:
                verify(path)
                return read(path)
            except damaged as err:
                aside = quarantine(path) if lock else None
                where = f"moved aside to {aside.name}" if aside is not None else "left in place"
                unreadable = f"{path} cannot be read ({_first_line(err)})"
                reason = str(err) if isinstance(err, CorruptFileError) else unreadable
                log.warning("Damaged cache entry: %s; %s, rebuilding it", reason, where)
        value = build()
        write_atomic(path, lambda f: write(value, f))
        return value


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete temp files of ``path`` (and of its checksum) left by processes of this host that died mid-write."""
    removed = []
    for temp in temp_files(path):
        host, pid = temp.name.rsplit(_TEMP_TAG, 1)[1].rsplit("-", 2)[:2]
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
                removed.append(temp)
    return removed


def temp_files(path: str | Path) -> list[Path]:
    """The temp files of ``path`` and of its checksum currently on disk (written by any host)."""
    path = Path(path)
    names = (path.name, checksum_path(path).name)
    return sorted(temp for name in names for temp in path.parent.glob(f".{name}{_TEMP_TAG}*"))


# ---- helpers ------------------------------------------------------------------------------------------------------


def _write_temp(path: Path, write: Callable[[IO[bytes]], Any]) -> Path:
    tmp = path.with_name(f".{path.name}{_TEMP_TAG}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")
    writer = None
    try:
        with open(tmp, "xb") as f:
            writer = _RecordingWriter(f)
            write(cast(IO[bytes], writer))  # a duck-typed binary file: it forwards everything else to f
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if writer is not None and writer.error is not None and writer.error is not err:
            raise writer.error from err  # the disk's own error, which torch.save reports as a bare RuntimeError
        raise
    return tmp


class _RecordingWriter:
    """A binary file that remembers the ``OSError`` its writes raised: torch.save wraps it in a RuntimeError."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._file.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@contextlib.contextmanager
def _naming_full_disk(path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException as err:
        cause = _no_space_error(err)
        if cause is None:
            raise
        assert cause.errno is not None  # _no_space_error only returns an ENOSPC/EDQUOT error
        kept = f"the previous {path.name} is intact; " if path.exists() else ""
        raise DiskFullError(
            cause.errno,
            f"no space left in {path.parent} to write {path.name} ({os.strerror(cause.errno)}); {kept}free space "
            "there or point the cache/checkpoint directory to another filesystem",
        ) from err


def _no_space_error(err: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT behind ``err``: itself, or an OSError in its cause/context chain (torch wraps them)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _replace_small(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}{_TEMP_TAG}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "x") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _checksum_text(name: str, digests: list[str]) -> str:
    return "".join(f"{digest}  {name}\n" for digest in dict.fromkeys(digests))


def _read_digests(sums: Path) -> list[str]:
    try:
        return [line.split()[0] for line in sums.read_text().splitlines() if line.strip()]
    except (FileNotFoundError, UnicodeDecodeError):
        return []


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable (ext4/xfs); some filesystems refuse fsync on a directory, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


__all__ = [
    "READ_ERRORS",
    "CorruptFileError",
    "DiskFullError",
    "checksum_path",
    "file_lock",
    "load_or_build",
    "quarantine",
    "remove_stale_temps",
    "sha256_file",
    "temp_files",
    "verify",
    "write_atomic",
]
