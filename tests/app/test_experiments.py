"""Every experiment (a row of a results table) runs end to end once, with one batch of everything."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lightning_advkd.train import CONF_DIR, run

from .conftest import compose_cfg, tiny_overrides

EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
#: One row runs in the quick subset; the others are marked slow.
QUICK_ROW = "fmnist_anc"


def test_experiments_are_deltas_only() -> None:
    for name in EXPERIMENTS:
        text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_"), name
        config = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml")
        assert set(config) <= {"defaults", "trainer", "dataset", "method", "regularizer", "teacher_training"}, name
        assert len(text.splitlines()) < 30, f"{name} should hold only what differs from the defaults"


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[] if n == QUICK_ROW else [pytest.mark.slow]) for n in EXPERIMENTS]
)
def test_experiment_runs_one_fast_dev_run(name: str, tmp_path: Path, data_root: Path) -> None:
    dataset = "cifar100" if name.startswith("cifar100") else "fashion_mnist"
    cfg = compose_cfg(
        [*tiny_overrides(data_root, dataset=dataset), f"experiment={name}", "debug=fast_dev_run", "logger=csv"],
        tmp_path,
    )
    assert cfg.dataset.name == dataset
    metrics = run(cfg)
    assert 0.0 <= metrics["test/student_acc"] <= 1.0
    assert "compression ratio" in (tmp_path / "summary.md").read_text()
