"""``task=export``: the student of a distillation checkpoint, written as safetensors, a plain state_dict and ONNX.

The student architecture is built from the run's config (``pair``, ``dataset``), filled with the checkpoint's
``student.*`` weights and handed to :func:`lightning_advkd.export.export_student`; the options are the ``export`` node.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lightning_advkd.app.compat import DatasetShape
from lightning_advkd.app.teacher_source import build_network
from lightning_advkd.export import export_student

log = logging.getLogger("lightning_advkd.train")


def export_task(cfg: DictConfig, shape: DatasetShape, num_classes: int, output_dir: Path) -> dict[str, float]:
    """Export the student of ``cfg.ckpt_path`` to ``export.out_dir`` (default ``<run dir>/export``), print the files.

    Returns:
        ``export/onnx_max_abs_diff`` when an ONNX file was written and checked.

    Raises:
        ValueError: Without ``ckpt_path``, with the command that makes one.
        FileNotFoundError: When ``ckpt_path`` is not a file.
    """
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        raise ValueError(
            "task=export needs ckpt_path=<checkpoint of a distillation run>, e.g. "
            "ckpt_path=outputs/distill/runs/<date>/checkpoints/last.ckpt, with the run's dataset and pair"
        )
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"task=export: no checkpoint at {ckpt_path}")
    options = cfg.export
    student = build_network(cfg, "student", num_classes, shape)
    out_dir = Path(options.get("out_dir") or output_dir / "export")
    log.info("Exporting the student %s of %s to %s", cfg.pair.student.model.name, ckpt_path, out_dir)
    result = export_student(
        ckpt_path,
        out_dir,
        formats=list(options.formats),
        input_shape=(shape.in_chans, shape.image_size, shape.image_size),
        student=student,
        parity_atol=options.get("parity_atol"),
        opset_version=options.get("opset_version"),
    )
    lines = [f"  {fmt:<12} {path}" for fmt, path in result.files.items()]
    if result.onnx_max_abs_diff is not None:
        lines.append(f"ONNX parity (onnxruntime, CPU): max abs logit difference {result.onnx_max_abs_diff:.3g}")
    print(f"\nStudent exported ({result.manifest}):\n" + "\n".join(lines) + "\n", flush=True)
    return {} if result.onnx_max_abs_diff is None else {"export/onnx_max_abs_diff": result.onnx_max_abs_diff}


__all__ = ["export_task"]
