"""The project's W&B workspace from code: ``python -m lightning_advkd.dashboard`` or ``advkd-train task=dashboard``.

One section per concern of an adversarial distillation run, named by the metrics the modules and callbacks log:
accuracy and agreement of student and teacher, each loss term of the student and of the discriminator, the
discriminator's accuracy on real (teacher) and fake (student) features and the gap between them, learning rates,
gradient norms, the teacher-vs-student feature projection images and the summary table. :data:`SECTIONS` is plain
data; :func:`build_workspace` turns it into ``wandb-workspaces`` objects (``pip install lightning_advkd[dashboard]``)
and :func:`save_workspace` saves them, or, offline, says what it would save without touching the network.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Literal

from lightning_advkd.objective import TERMS

__all__ = [
    "SECTIONS",
    "PanelSpec",
    "SectionSpec",
    "build_workspace",
    "dashboard",
    "dashboard_task",
    "main",
    "metric_keys",
    "save_workspace",
]

_INSTALL_HINT = "pip install 'lightning_advkd[dashboard]' (wandb-workspaces)"
DEFAULT_NAME = "lightning_advkd: adversarial distillation"


@dataclasses.dataclass(frozen=True)
class PanelSpec:
    """One panel: a line plot of metrics, a media browser of logged images, or a logged table.

    Attributes:
        kind: ``"line"``, ``"media"`` or ``"table"``.
        title: The panel's title.
        keys: The logged keys it shows (metrics, image key, or table key).
    """

    kind: Literal["line", "media", "table"]
    title: str
    keys: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SectionSpec:
    """A named section of panels."""

    name: str
    panels: tuple[PanelSpec, ...]


def _line(title: str, *keys: str) -> PanelSpec:
    return PanelSpec("line", title, keys)


#: The workspace: metric names as :class:`~lightning_advkd.AdversarialDistillation` (``module.py``; the student's data
#: terms are ``objective.TERMS``), the shared metrics (``metrics.py``), the feature-projection callback and the summary
#: log them.
SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec(
        "Accuracy",
        (
            _line("Student and teacher accuracy (validation)", "val/student_acc", "val/teacher_acc"),
            _line("Student-teacher agreement (validation)", "val/agreement"),
        ),
    ),
    SectionSpec(
        "Losses",
        (
            _line(
                "Student loss terms",
                "train/loss/student_adversarial",
                *(f"train/loss/student_{term}" for term in TERMS),
                "train/loss/student",
            ),
            _line(
                "Discriminator loss terms",
                "train/loss/discriminator_gan",
                "train/loss/discriminator_reg_r1",
                "train/loss/discriminator_reg_adversarial_samples",
                "train/loss/discriminator",
            ),
            _line("Student loss terms (validation)", "val/loss/student_adversarial", "val/loss/student_kd"),
        ),
    ),
    SectionSpec(
        "Discriminator",
        (
            _line("D accuracy on real / fake features", "train/d_acc_real", "train/d_acc_fake", "train/d_acc"),
            _line("D gap: mean D(real) - mean D(fake)", "train/d_gap", "val/d_gap"),
            _line("D accuracy (validation)", "val/d_acc_real", "val/d_acc_fake"),
        ),
    ),
    SectionSpec(
        "Optimization",
        (
            _line("Learning rates", "train/lr/student", "train/lr/discriminator"),
            _line("Gradient norms", "train/grad_norm/student", "train/grad_norm/discriminator"),
        ),
    ),
    SectionSpec("Features", (PanelSpec("media", "Teacher vs student features", ("val/feature_projection",)),)),
    SectionSpec("Summary", (PanelSpec("table", "Teacher / student summary", ("summary/table",)),)),
)


def metric_keys(sections: Sequence[SectionSpec] = SECTIONS) -> list[str]:
    """Every logged key the workspace shows, in order.

    Example:
        >>> keys = metric_keys()
        >>> "val/student_acc" in keys and "train/d_gap" in keys and "summary/table" in keys
        True
    """
    return [key for section in sections for panel in section.panels for key in panel.keys]


def build_workspace(
    entity: str, project: str, *, name: str = DEFAULT_NAME, sections: Sequence[SectionSpec] = SECTIONS
) -> Any:
    """The ``wandb_workspaces.workspaces.Workspace`` of ``sections`` (built in memory; nothing is sent).

    Raises:
        ImportError: When ``wandb-workspaces`` is not installed, naming the extra that installs it.
    """
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise ImportError(f"building the W&B workspace needs wandb-workspaces: {_INSTALL_HINT}") from err

    def panel(spec: PanelSpec) -> Any:
        if spec.kind == "line":
            return wr.LinePlot(title=spec.title, x="Step", y=list(spec.keys))
        if spec.kind == "media":
            return wr.MediaBrowser(title=spec.title, media_keys=list(spec.keys), mode="gallery")
        return wr.WeavePanelSummaryTable(table_name=spec.keys[0])

    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=[ws.Section(name=s.name, panels=[panel(p) for p in s.panels], is_open=True) for s in sections],
        settings=ws.WorkspaceSettings(x_axis="Step"),
    )


def save_workspace(workspace: Any, *, offline: bool) -> str:
    """Save ``workspace`` to W&B and return its URL; offline, return what would be saved and send nothing."""
    if offline:
        panels = sum(len(section.panels) for section in workspace.sections)
        lines = [
            f"offline: would save the W&B workspace {workspace.name!r} to {workspace.entity}/{workspace.project} "
            f"({len(workspace.sections)} sections, {panels} panels):"
        ]
        for section in workspace.sections:
            titles = [getattr(p, "title", "") or getattr(p, "table_name", type(p).__name__) for p in section.panels]
            lines.append(f"  {section.name}: {'; '.join(titles)}")
        lines.append("Run it again with W&B credentials (WANDB_API_KEY or `wandb login`) to save it.")
        return "\n".join(lines)
    workspace.save()
    return str(workspace.url)


def dashboard(project: str, entity: str | None = None, *, name: str = DEFAULT_NAME, offline: bool | None = None) -> str:
    """Build the workspace and save it (or, offline, describe it); the returned text says which.

    Args:
        project: W&B project of the runs (``logger.wandb.project``).
        entity: W&B entity; ``None``: the account's default entity online, a placeholder offline.
        name: The workspace's name.
        offline: ``None``: offline unless W&B credentials exist or ``WANDB_MODE`` says ``offline``/``disabled``.
    """
    if offline is None:
        from lightning_advkd.app.wandb_setup import wandb_mode

        offline = wandb_mode(os.environ) != "online"
    if entity is None:
        entity = "<your-entity>" if offline else _default_entity()
    return save_workspace(build_workspace(entity, project, name=name), offline=offline)


def _default_entity() -> str:
    import wandb

    entity = wandb.Api().default_entity
    if not entity:
        raise ValueError("no default W&B entity for these credentials: pass --entity (dashboard.entity=...)")
    return str(entity)


def dashboard_task(cfg: Any) -> dict[str, float]:
    """``advkd-train task=dashboard``: :func:`dashboard` with the options of the ``dashboard`` config node."""
    options = cfg.dashboard
    print(
        dashboard(str(options.project), options.get("entity"), name=str(options.name), offline=options.get("offline")),
        flush=True,
    )
    return {}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lightning_advkd.dashboard [--project P] [--entity E] [--name N] [--offline]``."""
    parser = argparse.ArgumentParser(description="Build the lightning_advkd W&B workspace from code.")
    parser.add_argument("--project", default="lightning_advkd")
    parser.add_argument("--entity", default=None)
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument("--offline", action="store_true", default=None, help="build it and say what would be saved")
    args = parser.parse_args(argv)
    print(dashboard(args.project, args.entity, name=args.name, offline=args.offline), flush=True)


if __name__ == "__main__":
    main()
