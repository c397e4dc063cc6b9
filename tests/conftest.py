"""Shared test settings: W&B never reaches for a server, Lightning stays quiet."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

warnings.filterwarnings("ignore", message=".*LeafSpec.*")
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path, monkeypatch):
    """Every test writes W&B files (if any) into its own temporary folder."""
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb"))
