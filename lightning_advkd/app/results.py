"""What a run leaves behind: its metrics, the exported student, the summary table (stdout, files, W&B)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig
from torch import nn

from lightning_advkd.app.compat import DatasetShape
from lightning_advkd.app.summary import (
    TABLE_COLUMNS,
    build_reports,
    compression_ratio,
    format_table,
    standalone,
    table_rows,
    write_summary,
)


def trainer_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The trainer's scalar ``callback_metrics`` as floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The checkpoint callback's best (else last) checkpoint, ``None`` without one."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    return getattr(callback, "best_model_path", None) or getattr(callback, "last_model_path", None) or None


def save_student(module: L.LightningModule, student: nn.Module, path: Path) -> Path:
    """The trained student's plain ``state_dict`` (no hooks, no wrapper), loadable without this package."""
    export_student = getattr(module, "export_student", None)  # a LightningModule's attributes type as Tensor | Module
    exported = export_student() if export_student is not None else standalone(student)
    torch.save(exported.state_dict(), path)
    return path


def summarize(
    cfg: DictConfig,
    loggers: list[Logger],
    teacher: nn.Module,
    student: nn.Module | None,
    shape: DatasetShape,
    metrics: dict[str, float],
    output_dir: Path,
    extra: dict[str, Any],
) -> None:
    """Print the teacher/student table, write ``summary.md``/``summary.json``, and send both to W&B."""
    arches = {"teacher": cfg.pair.teacher.model.name, "student": cfg.pair.student.model.name}
    threads = torch.get_num_threads()
    latency_threads = int(cfg.summary.get("latency_threads") or threads)
    # Batch-1 latency on a fixed number of threads: comparable between machines and runs, and not distorted by other
    # processes competing for the cores (OpenMP threads spin-waiting on a busy CPU inflate it tenfold and more).
    torch.set_num_threads(latency_threads)
    try:
        image = (shape.in_chans, shape.image_size, shape.image_size)
        reports = build_reports(
            teacher, student, arches, metrics, image, latency_repeats=int(cfg.summary.latency_repeats)
        )
    finally:
        torch.set_num_threads(threads)
    if student is None:
        title = f"teacher {arches['teacher']} on {cfg.dataset.name}"
    else:
        title = f"{cfg.method.name} on {cfg.dataset.name}: {arches['teacher']} -> {arches['student']}"
    footer = f"CPU latency: batch 1, {latency_threads} thread(s), median of {cfg.summary.latency_repeats} passes"
    table = format_table(reports, title, footer)
    info = {"task": cfg.task, "method": cfg.method.name, "dataset": cfg.dataset.name, "pair": cfg.pair.name, **extra}
    markdown, _ = write_summary(output_dir, reports, metrics, info, title, footer)
    print("\n" + table + f"\n(saved in {markdown})\n", flush=True)
    ratio = compression_ratio(reports)
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        logger.log_table(key="summary/table", columns=list(TABLE_COLUMNS), data=table_rows(reports))
        if ratio is not None:
            logger.experiment.summary["summary/compression_ratio"] = ratio
        for report in reports:
            prefix = f"summary/{report.role}"
            logger.experiment.summary.update(
                {
                    f"{prefix}_params": report.profile.parameters,
                    f"{prefix}_macs": report.profile.macs,
                    f"{prefix}_size_bytes": report.profile.size_bytes,
                    f"{prefix}_latency_ms": report.profile.latency_ms,
                }
            )


__all__ = ["best_checkpoint", "save_student", "summarize", "trainer_metrics"]
