"""W&B: the mode follows the credentials, an offline run records what the dashboards need, every run is finished."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import wandb
from omegaconf import DictConfig

from lightning_advkd import AdversarialDistillation
from lightning_advkd.app.wandb_setup import finish_wandb, has_wandb_credentials, run_identity, wandb_mode
from lightning_advkd.train import run

from ._wandb_records import offline_runs, read_offline_run

MakeCfg = Callable[..., DictConfig]


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No W&B login anywhere and no forced mode: the job must pick offline by itself."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_mode_follows_credentials(tmp_path: Path) -> None:
    netrc = tmp_path / ".netrc"
    assert wandb_mode({}, netrc_path=netrc) == "offline"
    assert wandb_mode({"WANDB_API_KEY": "k" * 40}, netrc_path=netrc) == "online"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert has_wandb_credentials({}, netrc_path=netrc)
    assert wandb_mode({}, netrc_path=netrc) == "online"
    assert not has_wandb_credentials({"WANDB_BASE_URL": "https://wandb.example.org"}, netrc_path=netrc)
    assert wandb_mode({"WANDB_MODE": "disabled"}, netrc_path=netrc) == "disabled"
    assert wandb_mode({"WANDB_MODE": "dryrun"}, netrc_path=netrc) == "offline"


def test_credentials_are_found_where_the_pinned_wandb_stores_them(tmp_path: Path) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine wandb.example.org:8443\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    server = {"WANDB_BASE_URL": "https://wandb.example.org:8443"}
    assert has_wandb_credentials(server, netrc_path=netrc), "wandb keys a server with a port by host:port"
    assert not has_wandb_credentials({}, netrc_path=netrc), "that entry is not api.wandb.ai's"


def test_unreachable_server_falls_back_to_offline_within_seconds(
    make_cfg: MakeCfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # well-formed credentials, nothing listening on the server's port
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    cfg = make_cfg("logger=wandb", "logger.wandb.settings.init_timeout=3", "debug=fast_dev_run")
    assert cfg.logger.wandb.mode == "online"
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        metrics = run(cfg)
    assert time.monotonic() - start < 90, "the fallback must not wait for wandb's default 90 s timeout"
    assert "test/student_acc" in metrics
    assert "logging offline instead" in caplog.text and "wandb sync" in caplog.text
    (run_dir,) = offline_runs(tmp_path / "run" / "wandb")
    assert read_offline_run(run_dir).config["method"]["name"] == "anc"


def test_run_identity_groups_by_sweep_and_pair() -> None:
    single = run_identity("cifar100", "vgg13_vgg8", "anc", "distill", ["adversarial_samples", "r1"], None)
    assert single == {
        "group": "cifar100/vgg13_vgg8",
        "job_type": "anc",
        "tags": ["cifar100", "vgg13_vgg8", "anc", "distill", "reg:adversarial_samples", "reg:r1"],
    }
    swept = run_identity("cifar100", "vgg13_vgg8", "kd", "distill", [], "2026-01-01_00-00-00")
    assert swept["group"] == "sweep-2026-01-01_00-00-00/vgg13_vgg8" and "sweep:2026-01-01_00-00-00" in swept["tags"]


def test_finish_without_a_run_is_a_no_op() -> None:
    assert finish_wandb() is None


def test_offline_run_records_config_metrics_images_table_and_model(
    make_cfg: MakeCfg, tmp_path: Path, no_credentials: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lightning_advkd.train")
    cfg = make_cfg(
        "logger=wandb",
        "logger.wandb.log_model=true",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "callbacks.feature_projection.every_n_epochs=1",
    )
    assert cfg.logger.wandb.mode == "offline"
    metrics = run(cfg)
    assert wandb.run is None, "the run is finished"
    (run_dir,) = offline_runs(tmp_path / "run" / "wandb")
    record = read_offline_run(run_dir)

    assert record.project == "lightning_advkd" and record.exit_code == 0
    assert record.group == "fashion_mnist/resnet14_lenet5" and record.job_type == "anc"
    assert {"fashion_mnist", "resnet14_lenet5", "anc", "reg:r1"} <= set(record.tags)
    # the resolved config is the run config
    assert record.config["method"]["name"] == "anc"
    assert record.config["pair"]["teacher"]["model"]["name"] == "resnet14"
    assert record.config["paths"]["output_dir"] == str(tmp_path / "run")
    keys = record.history_keys()
    health = {"train/d_acc", "train/d_acc_real", "train/d_acc_fake", "train/d_gap", "val/d_acc_real", "val/d_gap"}
    assert health <= keys, health - keys
    assert {"train/loss/student", "train/loss/discriminator", "val/student_acc", "test/student_acc"} <= keys
    assert record.last("test/student_acc") == pytest.approx(metrics["test/student_acc"])
    images = [row for row in record.history if "val/feature_projection/_type" in row]
    assert len(images) == 2 and images[0]["val/feature_projection/format"] == "png"
    assert (run_dir / "files" / images[0]["val/feature_projection/filenames"][0]).is_file()
    assert record.last("summary/table/nrows") == 2 and record.last("summary/table/ncols") == 8
    assert record.summary["summary/compression_ratio"] == pytest.approx(174_970 / 61_706)
    assert any(name.startswith("model-") for name in record.artifacts), record.artifacts  # Lightning checkpoints
    assert f"student-{record.run_id}" in record.artifacts  # the exported student state_dict
    assert len(list((tmp_path / "run" / "plots").glob("feature_projection_epoch*.png"))) == 2
    assert f"wandb sync {run_dir}" in caplog.text


def test_failing_job_still_finishes_its_run(
    make_cfg: MakeCfg, tmp_path: Path, no_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("crashed in the middle of training")

    # a failure during training, after the W&B run has started (bad options are refused before it starts)
    monkeypatch.setattr(AdversarialDistillation, "training_step", crash)
    cfg = make_cfg("logger=wandb", "trainer.max_epochs=1")
    with pytest.raises(RuntimeError, match="crashed in the middle of training"):
        run(cfg)
    assert wandb.run is None
    (run_dir,) = offline_runs(tmp_path / "run" / "wandb")
    record = read_offline_run(run_dir)
    assert record.exit_code == 1
    assert record.config["method"]["name"] == "anc"
