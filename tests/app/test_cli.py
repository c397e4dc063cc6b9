"""The command line, in subprocesses: sweeps, the 2-process CPU DDP simulation, resuming, Hydra's own errors.

Never ``strategy=ddp`` inside the pytest process: Lightning would re-run the pytest command line as rank 1.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ._wandb_records import offline_runs, read_offline_run
from .conftest import cli_env, run_cli, tiny_overrides

pytestmark = pytest.mark.slow
SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")


def job_args(data_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [*tiny_overrides(data_root), f"paths.cache_dir={tmp_path / 'cache'}", *extra]


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with path.open() as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(row[name]) for row in rows if row.get(name)]


def test_multirun_over_two_pairs_gives_two_jobs_and_two_wandb_runs(tmp_path: Path, data_root: Path) -> None:
    sweep = tmp_path / "sweep"
    env = cli_env(tmp_path)
    env.pop("WANDB_MODE")  # no credentials: the jobs choose offline themselves
    result = run_cli(
        [
            "-m",
            "pair=resnet14_lenet5,nin_lenet5",
            *job_args(data_root, tmp_path, *SHORT),
            "logger=wandb",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        env=env,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    groups = set()
    for job, pair in zip(jobs, ("resnet14_lenet5", "nin_lenet5"), strict=True):
        assert json.loads((job / "summary.json").read_text())["pair"] == pair
        (run_dir,) = offline_runs(job / "wandb")
        record = read_offline_run(run_dir)
        assert record.exit_code == 0 and pair in record.tags
        assert record.group == f"sweep-{sweep.name}/{pair}"
        assert "test/student_acc" in record.history_keys()
        assert f"wandb sync {run_dir}" in result.stderr + result.stdout
        groups.add(record.run_id)
    assert len(groups) == 2, "one W&B run per job"


def test_ddp_on_two_cpu_processes(tmp_path: Path, data_root: Path) -> None:
    run_dir = tmp_path / "ddp"
    run_cli(
        ["strategy=ddp_cpu2", *job_args(data_root, tmp_path, *SHORT), "logger=csv", f"hydra.run.dir={run_dir}"],
        tmp_path,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["test/student_acc"] >= 0 and summary["teacher"]["source"] == "trained"
    assert (run_dir / "train_ddp_process_1.log").is_file(), "rank 1 ran the same job in the same run directory"
    assert len(list((tmp_path / "cache" / "teachers").glob("*.ckpt"))) == 1, "rank 0 alone cached the teacher"
    recipe = json.loads(next((tmp_path / "cache" / "teachers").glob("*.json")).read_text())["recipe"]
    assert recipe["trainer"]["devices"] == 2
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_resume_continues_counters_and_epochs(tmp_path: Path, data_root: Path) -> None:
    args = job_args(data_root, tmp_path, "trainer.limit_train_batches=3", "logger=csv", "teacher_output_cache=false")
    first, second = tmp_path / "first", tmp_path / "second"
    run_cli([*args, "trainer.max_epochs=1", f"hydra.run.dir={first}"], tmp_path)
    checkpoint = first / "checkpoints" / "last.ckpt"
    run_cli([*args, "trainer.max_epochs=2", f"ckpt_path={checkpoint}", f"hydra.run.dir={second}"], tmp_path)
    before, after = metrics_rows(first), metrics_rows(second)
    assert column(before, "train/student_step") == [1.0, 2.0, 3.0]
    assert column(after, "train/student_step") == [4.0, 5.0, 6.0]
    assert {row["epoch"] for row in after if row.get("train/student_step")} == {"1"}
    assert column(after, "train/discriminator_step") == [4.0, 5.0, 6.0]
    assert json.loads((second / "summary.json").read_text())["teacher"]["source"] == "cache"


def test_unknown_option_on_the_command_line(tmp_path: Path) -> None:
    result = run_cli(["pair=resnet14_lenet6"], tmp_path, check=False)
    assert result.returncode != 0
    assert "Could not find 'pair/resnet14_lenet6'" in result.stderr
    assert "Available options in 'pair'" in result.stderr and "resnet14_lenet5" in result.stderr
