"""Reading an offline W&B run back: the records of its ``run-<id>.wandb`` file (what ``wandb sync`` uploads).

Offline runs write no ``wandb-summary.json``; the transaction log is the only complete record. Its format is
LevelDB's log format with W&B's header: a 7-byte file header (``:W&B``, magic 0xBEE1, version), then records of a
7-byte header (CRC-32, length, type: full/first/middle/last) and a protobuf ``Record``, in 32 KiB blocks.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

_HEADER = 7
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(raw: bytes) -> list[bytes]:
    ident, magic, _version = struct.unpack("<4sHB", raw[:_HEADER])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"not a W&B transaction log (header {ident!r}, magic {magic:#x})")
    payloads, pending, pos = [], b"", _HEADER
    while pos + _HEADER <= len(raw):
        space = _BLOCK - pos % _BLOCK
        if space < _HEADER:
            pos += space
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + _HEADER])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            pos += space
            continue
        if pos + _HEADER + length > len(raw):  # a record still being written
            break
        data = raw[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            payloads.append(data)
        elif kind == _FIRST:
            pending = data
        elif kind == _MIDDLE:
            pending += data
        elif kind == _LAST:
            payloads.append(pending + data)
            pending = b""
    return payloads


def _items(items: Any) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


@dataclass
class OfflineRun:
    """What an offline run recorded."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    exit_code: int | None = None

    def history_keys(self) -> set[str]:
        """Every metric name logged at least once."""
        return {key for row in self.history for key in row}

    def last(self, key: str) -> Any:
        """The last logged value of ``key``."""
        return [row[key] for row in self.history if key in row][-1]


def read_offline_run(run_dir: str | Path, wait: float = 30.0) -> OfflineRun:
    """Parse ``<run_dir>/run-<id>.wandb`` of an offline run (``run_dir`` is ``.../wandb/offline-run-<ts>-<id>``).

    ``wandb.finish()`` can return before W&B's service process has written the last records: the file is read again
    until its exit record is there, for at most ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        run = _read(run_dir)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _read(run_dir: str | Path) -> OfflineRun:
    (path,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project = record.run.run_id, record.run.project
            run.group, run.job_type, run.tags = record.run.run_group, record.run.job_type, list(record.run.tags)
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "artifact":
            run.artifacts.append(record.artifact.name)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(folder: str | Path) -> list[Path]:
    """The offline run directories under ``folder`` (any depth), sorted."""
    return sorted(p for p in Path(folder).rglob("offline-run-*") if p.is_dir())
