"""DDP with two optimizers on CPU (gloo): replicas stay identical; DDP that refuses unused parameters is a clear error.

Plain ``strategy="ddp"`` re-launches the current command line as rank 1, so it never runs inside the pytest process:
it runs in a subprocess script. ``ddp_spawn`` runs in-process with module-level (picklable) objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_replicas import run

TESTS = Path(__file__).parent


def assert_identical_and_trained(out_dir: Path) -> None:
    """Parameters match after every step. BatchNorm buffers match after validation: DDP broadcasts rank 0's buffers at
    the start of each forward, so between a training step and the next forward each rank holds its own update."""
    init = torch.load(out_dir / "init_rank0.pt")
    ranks = [torch.load(out_dir / f"end_rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["counters"] == ranks[1]["counters"] == (8, 8)  # 64 samples / 2 ranks / batch 8, 2 epochs
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), f"replicas differ at {key}"
    changed = [
        k for k, v in init["state"].items() if v.is_floating_point() and not torch.equal(v, ranks[0]["state"][k])
    ]
    assert any(k.startswith("student.") for k in changed) and any(k.startswith("discriminator.") for k in changed)


@pytest.mark.slow
def test_ddp_spawn_keeps_replicas_identical(tmp_path):
    run(str(tmp_path), "ddp_spawn_find_unused_parameters_true")
    assert_identical_and_trained(tmp_path)


def test_ddp_that_refuses_unused_parameters_fails_before_training_naming_the_strategy(tmp_path):
    # the forked rank's ValueError reaches the parent inside a ProcessRaisedException that quotes it
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match=r"ValueError: .*DDP refuses unless"):
        run(str(tmp_path), "ddp_fork")
    assert not list(tmp_path.glob("end_rank*.pt"))


@pytest.mark.slow
def test_plain_ddp_in_a_subprocess_keeps_replicas_identical(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(TESTS / "ddp_replicas.py"), str(tmp_path), "ddp_find_unused_parameters_true"],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_identical_and_trained(tmp_path)
