"""The app from a built wheel, not the checkout: the configs ship as package data and other Hydra apps compose them.

The wheel is built from a clean copy of the sources and installed with ``pip install --target`` into a folder put first
on ``PYTHONPATH``, where it shadows the checkout's editable install (torch and the rest come from the environment, so
this stays fast). Every command runs from a directory outside the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, cli_env, tiny_overrides

pytestmark = pytest.mark.slow
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "lightning_advkd")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the wheel was installed into (``pip install --target``)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "lightning_advkd-source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", source], check=True)
    (wheel,) = (root / "dist").glob("lightning_advkd-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", root / "site", wheel], check=True)
    return root / "site"


def python(args: list[str], cwd: Path, site: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = cli_env(tmp_path, PYTHONPATH=str(site))
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(
            f"exit code {result.returncode}\nSTDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-6000:]}"
        )
    return result


def test_wheel_carries_every_config(installed: Path) -> None:
    shipped = sorted(p.relative_to(installed / "lightning_advkd").as_posix() for p in installed.rglob("*.yaml"))
    in_checkout = sorted(
        p.relative_to(REPO / "lightning_advkd").as_posix() for p in (REPO / "lightning_advkd").rglob("*.yaml")
    )
    assert shipped == in_checkout and "conf/train.yaml" in shipped


def test_installed_app_runs_from_anywhere(installed: Path, tmp_path: Path, data_root: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = python(
        ["-c", "import lightning_advkd.train as t; print(t.__file__, t.CONF_DIR)"], elsewhere, installed, tmp_path
    )
    module_file, conf_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(installed) and Path(conf_dir) == installed / "lightning_advkd" / "conf"
    assert (
        "== Configuration groups =="
        in python(["-m", "lightning_advkd.train", "--help"], elsewhere, installed, tmp_path).stdout
    )

    run_dir = tmp_path / "run"
    args = ["debug=fast_dev_run", "logger=csv", f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    python(["-m", "lightning_advkd.train", *args, *tiny_overrides(data_root)], elsewhere, installed, tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["metrics"]["test/student_acc"] >= 0
    sources = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["config_sources"]
    main = next(s for s in sources if s["provider"] == "main")
    assert main["path"] == str(installed / "lightning_advkd" / "conf"), "the configs came from the installed copy"


def test_user_app_composes_the_installed_configs(installed: Path, tmp_path: Path, data_root: Path) -> None:
    app = tmp_path / "user_app"
    shutil.copytree(REPO / "examples" / "user_app", app)
    sweep = tmp_path / "sweep"
    args = ["-m", "pair=resnet8_lenet5,resnet14_lenet5", "debug=fast_dev_run", "logger=csv"]
    args += [f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}", *tiny_overrides(data_root)]
    result = python(["my_app.py", *args], app, installed, tmp_path)
    assert f"lightning_advkd from {installed / 'lightning_advkd' / '__init__.py'}" in result.stdout
    pairs = [json.loads((sweep / job / "summary.json").read_text())["pair"] for job in ("0", "1")]
    assert pairs == ["resnet8_lenet5", "resnet14_lenet5"], "the app's own pair and the package's, side by side"
