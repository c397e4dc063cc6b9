"""The configuration is checked first: every bad option fails in seconds, before any teacher is trained."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from lightning_advkd.app.validate import ConfigError
from lightning_advkd.train import run

MakeCfg = Callable[..., DictConfig]
FAST = ("logger=none",)


def fails_fast(cfg: DictConfig, error: type[BaseException], match: str, cache: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(error, match=match):
        run(cfg)
    assert time.perf_counter() - started < 10, "the check comes before any training"
    assert not list(cache.glob("teachers/*.ckpt")), "no teacher was trained"


def test_bad_value_type_names_the_key(make_cfg: MakeCfg, tmp_path: Path) -> None:
    fails_fast(make_cfg(*FAST, "trainer.max_epochs=ten"), ConfigError, r"trainer\.max_epochs.*'ten'", tmp_path)


def test_bad_teacher_trainer_value_names_the_key(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg(*FAST, "teacher_training.trainer.max_epochs=1.5")
    fails_fast(cfg, ConfigError, r"teacher_training\.trainer\.max_epochs", tmp_path)


def test_missing_resume_checkpoint(make_cfg: MakeCfg, tmp_path: Path) -> None:
    cfg = make_cfg(*FAST, f"ckpt_path={tmp_path / 'nowhere.ckpt'}")
    fails_fast(cfg, ConfigError, r"nowhere\.ckpt: no such file", tmp_path)


def test_evaluate_without_checkpoint(make_cfg: MakeCfg, tmp_path: Path) -> None:
    fails_fast(make_cfg(*FAST, "task=evaluate"), ConfigError, "task=evaluate needs ckpt_path", tmp_path)


def test_resume_with_another_seed(make_cfg: MakeCfg, tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(b"not read")
    first = make_cfg(*FAST, run="earlier")
    OmegaConf.save({"seed": 0, "dataset": {"name": first.dataset.name}}, earlier / "config_resolved.yaml")
    cfg = make_cfg(*FAST, "seed=1", f"ckpt_path={earlier / 'checkpoints' / 'last.ckpt'}")
    fails_fast(cfg, ConfigError, r"seed=0, this run has seed=1: resume with seed=0", tmp_path)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("method.module.adversarial_weight=-1", "adversarial_weight"),
        ("method.module.gan_loss=cosine", "gan_loss"),
        ("pair.teacher.tap=no_such_layer", "no_such_layer"),
    ],
)
def test_bad_module_option_fails_before_the_teacher(
    make_cfg: MakeCfg, tmp_path: Path, override: str, match: str
) -> None:
    fails_fast(make_cfg(*FAST, override), (ValueError, KeyError, TypeError), match, tmp_path)


def test_bad_callback_option_fails_before_the_teacher(make_cfg: MakeCfg, tmp_path: Path) -> None:
    fails_fast(make_cfg(*FAST, "callbacks.finite_guard.action=ignore"), ValueError, "FiniteStateGuard", tmp_path)
