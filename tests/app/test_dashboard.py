"""The W&B workspace from code: built offline without the network, and its panels name metrics a run really logs."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from lightning_advkd.dashboard import SECTIONS, build_workspace, dashboard, main, metric_keys
from lightning_advkd.objective import TERMS
from lightning_advkd.train import run

ws = pytest.importorskip("wandb_workspaces.workspaces")

MakeCfg = Callable[..., DictConfig]
# Keys that only some configurations log: the student's terms other than the default KD term, another regularizer
# than the default R1.
OPTIONAL = {f"train/loss/student_{t}" for t in TERMS if t != "kd"} | {
    "train/loss/discriminator_reg_adversarial_samples"
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)

    def refuse(self: object) -> None:
        raise AssertionError("the offline dashboard must not save anything")

    monkeypatch.setattr(ws.Workspace, "save", refuse)


def test_workspace_has_every_section_and_panel() -> None:
    workspace = build_workspace("team", "lightning_advkd")
    assert (workspace.entity, workspace.project) == ("team", "lightning_advkd")
    assert [s.name for s in workspace.sections] == [s.name for s in SECTIONS]
    plots = {p.title: p for section in workspace.sections for p in section.panels if hasattr(p, "y")}
    assert plots["Student and teacher accuracy (validation)"].y == ["val/student_acc", "val/teacher_acc"]
    assert "train/d_gap" in plots["D gap: mean D(real) - mean D(fake)"].y
    kinds = {type(p).__name__ for section in workspace.sections for p in section.panels}
    assert kinds == {"LinePlot", "MediaBrowser", "WeavePanelSummaryTable"}


def test_offline_says_what_it_would_save(capsys: pytest.CaptureFixture) -> None:
    text = dashboard("lightning_advkd")
    assert text.startswith("offline: would save the W&B workspace") and "<your-entity>/lightning_advkd" in text
    for section in SECTIONS:
        assert f"  {section.name}: " in text
    main(["--project", "p", "--entity", "e"])
    assert "would save" in capsys.readouterr().out


def test_missing_wandb_workspaces_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb_workspaces.workspaces", None)
    with pytest.raises(ImportError, match=r"lightning_advkd\[dashboard\]"):
        build_workspace("team", "lightning_advkd")


def test_task_dashboard_builds_it_offline(make_cfg: MakeCfg, capsys: pytest.CaptureFixture) -> None:
    assert run(make_cfg("task=dashboard", "logger=none", "dashboard.entity=team")) == {}
    assert "would save the W&B workspace" in capsys.readouterr().out


def test_panels_name_metrics_the_default_job_logs(make_cfg: MakeCfg, tmp_path: Path) -> None:
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    run(make_cfg(*short, "logger=csv", "test_after_fit=false"))
    (path,) = (tmp_path / "run").glob("csv/version_*/metrics.csv")
    with path.open() as handle:
        logged = set(next(csv.reader(handle)))
    lines = {key for s in SECTIONS for p in s.panels if p.kind == "line" for key in p.keys}
    assert lines - logged <= OPTIONAL, f"panels for metrics nothing logs: {sorted(lines - logged - OPTIONAL)}"
    assert {"val/feature_projection", "summary/table"} <= set(metric_keys())
