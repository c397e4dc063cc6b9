"""The end-of-run summary: teacher vs student accuracy and cost, as a table for the terminal, files and W&B."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_advkd.profiling import ModelProfile, profile_model


@dataclass(frozen=True)
class ModelReport:
    """One row of the summary.

    Attributes:
        role: ``"teacher"`` or ``"student"``.
        arch: Architecture name.
        test_acc: Top-1 test accuracy in [0, 1], or ``None`` when the test set has no labels.
        agreement: Fraction of test images where the student predicts the teacher's class (``None`` for the teacher).
        profile: Parameters, MACs, serialized size and CPU latency.
    """

    role: str
    arch: str
    test_acc: float | None
    agreement: float | None
    profile: ModelProfile


def standalone(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` in eval mode, in the default memory format (what gets deployed).

    Feature taps hook a network only while they read it, so the copy carries no hook of this package.
    """
    return copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)


def build_reports(
    teacher: nn.Module | None,
    student: nn.Module | None,
    arches: Mapping[str, str],
    metrics: Mapping[str, float],
    input_shape: Sequence[int],
    latency_repeats: int = 30,
) -> list[ModelReport]:
    """Profile the networks on the CPU and pair each with its test metrics.

    Args:
        teacher: The teacher (``None`` to leave it out).
        student: The trained student (``None`` to leave it out, as for ``task=teacher``).
        arches: Architecture name by role.
        metrics: Test metrics with ``test/teacher_acc``, ``test/student_acc``, ``test/agreement`` (missing: ``None``).
        input_shape: One input's shape, e.g. ``(1, 28, 28)``.
        latency_repeats: Timed forward passes per network.
    """
    reports = []
    for role, model in (("teacher", teacher), ("student", student)):
        if model is None:
            continue
        profile = profile_model(standalone(model), input_shape, repeats=latency_repeats)
        accuracy = metrics.get(f"test/{role}_acc")
        agreement = metrics.get("test/agreement") if role == "student" else None
        reports.append(
            ModelReport(
                role,
                arches.get(role, "?"),
                None if accuracy is None else float(accuracy),
                None if agreement is None else float(agreement),
                profile,
            )
        )
    return reports


def compression_ratio(reports: Sequence[ModelReport]) -> float | None:
    """Teacher parameters / student parameters, when both are in the reports."""
    by_role = {r.role: r for r in reports}
    if "teacher" in by_role and "student" in by_role and by_role["student"].profile.parameters:
        return by_role["teacher"].profile.parameters / by_role["student"].profile.parameters
    return None


TABLE_COLUMNS = (
    "model",
    "arch",
    "test acc %",
    "agreement %",
    "params",
    "MACs",
    "checkpoint MB",
    "CPU ms/image",
)


def table_rows(reports: Sequence[ModelReport]) -> list[list[Any]]:
    """The summary as rows of :data:`TABLE_COLUMNS` (numbers, ``None`` where a value does not apply)."""
    return [
        [
            r.role,
            r.arch,
            None if r.test_acc is None else round(100 * r.test_acc, 2),
            None if r.agreement is None else round(100 * r.agreement, 2),
            r.profile.parameters,
            r.profile.macs,
            round(r.profile.size_bytes / 1e6, 3),
            round(r.profile.latency_ms, 3),
        ]
        for r in reports
    ]


def format_table(reports: Sequence[ModelReport], title: str = "", footer: str = "") -> str:
    """A plain-text table (Markdown-compatible) with the compression ratio (and ``footer``) under it.

    Example:
        >>> p = ModelProfile(parameters=1000, macs=5000, size_bytes=4000, latency_ms=0.5)
        >>> q = ModelProfile(parameters=100, macs=400, size_bytes=500, latency_ms=0.1)
        >>> reports = [ModelReport("teacher", "big", 0.9, None, p), ModelReport("student", "s", 0.8, 0.85, q)]
        >>> print(format_table(reports))
        | model   | arch | test acc % | agreement % | params | MACs  | checkpoint MB | CPU ms/image |
        |---------|------|------------|-------------|--------|-------|---------------|--------------|
        | teacher | big  | 90.00      | -           | 1,000  | 5,000 | 0.004         | 0.500        |
        | student | s    | 80.00      | 85.00       | 100    | 400   | 0.001         | 0.100        |
        compression ratio (teacher params / student params): 10.0x
    """
    cells = [list(TABLE_COLUMNS)]
    for row in table_rows(reports):
        role, arch, acc, agreement, params, macs, size, latency = row
        cells.append(
            [
                role,
                arch,
                "-" if acc is None else f"{acc:.2f}",
                "-" if agreement is None else f"{agreement:.2f}",
                f"{params:,}",
                f"{macs:,}",
                f"{size:.3f}",
                f"{latency:.3f}",
            ]
        )
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(TABLE_COLUMNS))]
    lines = [f"## {title}", ""] if title else []
    for index, row in enumerate(cells):
        lines.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    ratio = compression_ratio(reports)
    if ratio is not None:
        lines.append(f"compression ratio (teacher params / student params): {ratio:.1f}x")
    if footer:
        lines.append(footer)
    return "\n".join(lines)


def summary_dict(reports: Sequence[ModelReport], metrics: Mapping[str, float], extra: Mapping[str, Any]) -> dict:
    """Everything of the summary as plain data (``summary.json``)."""
    return {
        "models": [{**asdict(r), "profile": asdict(r.profile)} for r in reports],
        "compression_ratio": compression_ratio(reports),
        "metrics": {k: float(v) for k, v in metrics.items()},
        **extra,
    }


def write_summary(
    output_dir: str | Path,
    reports: Sequence[ModelReport],
    metrics: Mapping[str, float],
    extra: Mapping[str, Any],
    title: str = "",
    footer: str = "",
) -> tuple[Path, Path]:
    """Write ``summary.md`` (the table) and ``summary.json`` (all values) into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = output_dir / "summary.md"
    markdown.write_text(format_table(reports, title, footer) + "\n")
    data = output_dir / "summary.json"
    data.write_text(json.dumps(summary_dict(reports, metrics, extra), indent=2, default=str) + "\n")
    return markdown, data


__all__ = [
    "TABLE_COLUMNS",
    "ModelReport",
    "build_reports",
    "compression_ratio",
    "format_table",
    "standalone",
    "summary_dict",
    "table_rows",
    "write_summary",
]
