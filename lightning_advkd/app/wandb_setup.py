"""W&B without surprises: online only when credentials exist, offline (syncable later) otherwise; every run finished.

The mode is passed to ``wandb.init`` as ``mode=`` (through ``WandbLogger(**kwargs)``), never as
``WandbLogger(offline=True)``, which sets ``WANDB_MODE=dryrun`` in the process environment for good and so overrides
``disabled`` for every later run of the process.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

DEFAULT_HOST = "api.wandb.ai"
#: Spellings of ``WANDB_MODE`` older clients used, mapped to the ones ``wandb.init(mode=)`` takes.
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


def _netrc_machines(env: Mapping[str, str]) -> list[str]:
    """The netrc machine names that hold W&B credentials for the configured server.

    The pinned wandb (0.31) writes and reads the entry under the server URL's ``host[:port]``; older clients used the
    bare host name.
    """
    parts = urlsplit(env.get("WANDB_BASE_URL") or f"https://{DEFAULT_HOST}")
    return list(dict.fromkeys(name for name in (parts.netloc, parts.hostname) if name))


def _netrc_file(env: Mapping[str, str], netrc_path: str | Path | None) -> Path:
    """The netrc file wandb reads: ``netrc_path``, ``$NETRC``, ``~/.netrc``, else ``~/_netrc`` (Windows)."""
    if netrc_path or env.get("NETRC"):
        return Path(netrc_path or env["NETRC"]).expanduser()
    unix = Path("~/.netrc").expanduser()
    windows = Path("~/_netrc").expanduser()
    return windows if not unix.is_file() and windows.is_file() else unix


def has_wandb_credentials(env: Mapping[str, str] | None = None, netrc_path: str | Path | None = None) -> bool:
    """Whether W&B could log in without asking: ``WANDB_API_KEY`` is set, or the netrc file has the W&B server.

    Args:
        env: The environment to read (default ``os.environ``).
        netrc_path: The netrc file (default ``$NETRC``, ``~/.netrc`` or ``~/_netrc``, as wandb looks for it).

    Example:
        >>> has_wandb_credentials({"WANDB_API_KEY": "x" * 40})
        True
        >>> has_wandb_credentials({}, netrc_path="/nonexistent/.netrc")
        False
    """
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    path = _netrc_file(env, netrc_path)
    if not path.is_file():
        return False
    try:
        entries = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError):
        return False
    return any(entries.authenticators(machine) is not None for machine in _netrc_machines(env))


def wandb_mode(env: Mapping[str, str] | None = None, netrc_path: str | Path | None = None) -> str:
    """``wandb.init``'s ``mode``: ``$WANDB_MODE`` when set, else ``"online"`` with credentials, ``"offline"`` without.

    Example:
        >>> wandb_mode({"WANDB_MODE": "disabled"})
        'disabled'
        >>> wandb_mode({}, netrc_path="/nonexistent/.netrc")
        'offline'
    """
    env = os.environ if env is None else env
    explicit = env.get("WANDB_MODE")
    if explicit:
        return _MODE_ALIASES.get(explicit, explicit)
    return "online" if has_wandb_credentials(env, netrc_path) else "offline"


def register_resolvers() -> None:
    """Register ``${wandb_mode:}`` for the configs (idempotent)."""
    if not OmegaConf.has_resolver("wandb_mode"):
        OmegaConf.register_new_resolver("wandb_mode", lambda: wandb_mode(), use_cache=False)


def run_identity(
    dataset: str, pair: str, method: str, task: str, regularizers: Sequence[str], sweep: str | None
) -> dict[str, Any]:
    """Group, job type and tags of one run, so the W&B dashboard groups runs by sweep and pair and filters by method.

    A single run is grouped by dataset and pair (its seeds and methods side by side); a job of a sweep by the sweep
    and its pair, so every sweep keeps its own groups.

    Example:
        >>> run_identity("fashion_mnist", "resnet14_lenet5", "anc", "distill", ["adversarial_samples"], None)["group"]
        'fashion_mnist/resnet14_lenet5'
        >>> run_identity("cifar100", "vgg13_vgg8", "kd", "distill", [], "2026-01-01_10-00-00")["group"]
        'sweep-2026-01-01_10-00-00/vgg13_vgg8'
    """
    group = f"sweep-{sweep}/{pair}" if sweep else f"{dataset}/{pair}"
    tags = [dataset, pair, method, task, *(f"reg:{name}" for name in regularizers)]
    if sweep:
        tags.append(f"sweep:{sweep}")
    return {"group": group[:128], "job_type": method, "tags": [tag[:64] for tag in tags]}


def finish_wandb(exit_code: int = 0) -> str | None:
    """Finish the process's W&B run if one is open; return the ``wandb sync`` command of an offline run.

    Safe to call when wandb was never imported or no run is open. Under a Hydra multirun every job must end its own run,
    or the next job's ``WandbLogger`` attaches to the previous one and only one run gets logged.
    """
    if "wandb" not in sys.modules:
        return None
    import wandb

    run = wandb.run
    if run is None:
        return None
    offline = run.settings.mode == "offline"
    sync_dir = run.settings.sync_dir
    wandb.finish(exit_code=exit_code)
    if offline and sync_dir:
        return f"wandb sync {sync_dir}"
    return None


__all__ = ["finish_wandb", "has_wandb_credentials", "register_resolvers", "run_identity", "wandb_mode"]
