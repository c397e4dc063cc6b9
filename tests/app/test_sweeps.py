"""Hydra's sweep plugins with the app, in subprocesses: a tiny Optuna study stored in SQLite and a submitit launch.

Both plugins are CI requirements (``requirements/ci.txt``), so these tests run rather than skip. Offline, one batch of
everything per job.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from .conftest import run_cli, tiny_overrides

pytestmark = pytest.mark.slow


def job_args(data_root: Path, tmp_path: Path, sweep: Path) -> list[str]:
    return [
        *tiny_overrides(data_root),
        "debug=fast_dev_run",
        "logger=csv",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    ]


def test_optuna_study_of_two_trials_in_sqlite(tmp_path: Path, data_root: Path) -> None:
    sweep, storage = tmp_path / "optuna", f"sqlite:///{tmp_path / 'optuna.db'}"
    run_cli(
        [
            "sweep=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.study_name=tiny",
            f"hydra.sweeper.storage={storage}",
            "dataset.datamodule.val_split=16",
            *job_args(data_root, tmp_path, sweep),
        ],
        tmp_path,
    )
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert 0.0 <= results["best_value"] <= 1.0
    assert set(results["best_params"]) == {
        "method.module.adversarial_weight",
        "method.module.kd_weight",
        "optimizer.lr",
        "regularizer.r1.weight",
    }
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2 and study.best_value == results["best_value"]
    for job, trial in zip(("0", "1"), trials, strict=True):
        resolved = yaml.safe_load((sweep / job / "config_resolved.yaml").read_text())
        assert resolved["optimizer"]["lr"] == pytest.approx(trial.params["optimizer.lr"]), "each job ran its trial"


def test_submitit_local_launcher_runs_two_jobs(tmp_path: Path, data_root: Path) -> None:
    sweep = tmp_path / "submitit"
    run_cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "hydra.launcher.cpus_per_task=1",
            "pair=resnet14_lenet5,nin_lenet5",
            *job_args(data_root, tmp_path, sweep),
        ],
        tmp_path,
    )
    pairs = [json.loads((sweep / job / "summary.json").read_text())["pair"] for job in ("0", "1")]
    assert pairs == ["resnet14_lenet5", "nin_lenet5"]
    assert list((sweep / ".submitit").glob("*/*_result.pkl")), "the jobs ran through submitit"
