"""``advkd-train task=export ckpt_path=...``: the student of a distillation run as safetensors, state_dict and ONNX."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from lightning_advkd.export import load_student_state_dict
from lightning_advkd.models import create_model
from lightning_advkd.train import run

pytest.importorskip("safetensors")
pytest.importorskip("onnxruntime")

MakeCfg = Callable[..., DictConfig]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=none"]


def test_export_task_writes_the_runs_student(make_cfg: MakeCfg, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    run(make_cfg(*SHORT, "test_after_fit=false", run="distill", cache=cache))
    checkpoint = tmp_path / "distill" / "checkpoints" / "last.ckpt"

    metrics = run(make_cfg("task=export", f"ckpt_path={checkpoint}", "logger=none", run="export", cache=cache))

    out = tmp_path / "export" / "export"
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "student.onnx", "student.pt", "student.safetensors"]
    assert metrics["export/onnx_max_abs_diff"] < 1e-4
    printed = capsys.readouterr().out
    assert "max abs logit difference" in printed and str(out / "student.onnx") in printed
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["input_shape"] == [1, 28, 28] and manifest["architecture"].endswith("LeNet5")
    student = create_model("lenet5", num_classes=10, in_chans=1)
    student.load_state_dict(torch.load(out / "student.pt", weights_only=True))
    expected = load_student_state_dict(checkpoint)
    assert all(torch.equal(expected[k], v) for k, v in student.state_dict().items())


def test_export_task_needs_a_checkpoint(make_cfg: MakeCfg, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task=export needs ckpt_path="):
        run(make_cfg("task=export", "logger=none"))
    with pytest.raises(ValueError, match=r"missing\.ckpt: no such file"):  # checked before anything else runs
        run(make_cfg("task=export", f"ckpt_path={tmp_path / 'missing.ckpt'}", "logger=none"))


def test_export_formats_and_folder_are_options(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run(make_cfg(*SHORT, "test_after_fit=false", run="distill", cache=cache))
    checkpoint = tmp_path / "distill" / "checkpoints" / "last.ckpt"
    folder = tmp_path / "deploy"
    overrides = [f"ckpt_path={checkpoint}", "export.formats=[safetensors]", f"export.out_dir={folder}"]
    assert run(make_cfg("task=export", *overrides, "logger=none", run="export", cache=cache)) == {}
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "student.safetensors"]
