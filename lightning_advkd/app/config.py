"""The package's Hydra configs and the plumbing around them: where they live, building objects from ``_target_`` nodes.

The configs ship inside the package (``lightning_advkd/conf``), so the app finds them wherever it is installed, and a
user's own Hydra app composes them through the search path ``pkg://lightning_advkd.conf``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("lightning_advkd.train")

#: The package's config folder (``config_path`` of the entry point; ``pkg://lightning_advkd.conf`` for other apps).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
#: The search-path entry a user's own Hydra app adds to compose the package's config groups.
SEARCH_PATH = "pkg://lightning_advkd.conf"


def build(what: str, node: Any, *, detail: str = "", **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with a log line first, and the object's own error when it refuses.

    Args:
        what: What is built, for the log line ("trainer", "module", ...).
        node: A config node with a ``_target_``.
        detail: Appended to the log line in parentheses.
        **kwargs: Arguments completing the node (objects that cannot live in a config).
    """
    target = node.get("_target_", "?") if hasattr(node, "get") else "?"
    log.info("Instantiating %s <%s>%s", what, target, f" ({detail})" if detail else "")
    try:
        # Plain lists and dicts, not OmegaConf containers: they end up in checkpoints' hyper-parameters, which
        # torch.load(weights_only=True) must be able to read back (resume, evaluate).
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        # The object's own message (e.g. "gan_loss must be one of ...") says what to fix; Hydra's wrapper only
        # repeats it inside a longer one. The log line above names the target.
        if isinstance(err.__cause__, (ValueError, TypeError, KeyError, FileNotFoundError)):
            raise err.__cause__ from None
        raise


def plain(node: Any) -> Any:
    """A config node as resolved plain Python containers (anything else as it is)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def merged(base: DictConfig, overrides: DictConfig | None) -> dict[str, Any]:
    """``base`` resolved in its own config, then ``overrides`` on top (a detached merge would lose interpolations)."""
    result = OmegaConf.merge(OmegaConf.create(plain(base)), OmegaConf.create(plain(overrides) or {}))
    return OmegaConf.to_container(result, resolve=True)  # type: ignore[return-value]


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The job's config, resolved, without Hydra's own node (present when composed with ``return_hydra_config``)."""
    # DictConfig types its keys as any key omegaconf allows; a job config's are strings.
    return cast("dict[str, Any]", {key: plain(cfg[key]) for key in cfg if key != "hydra"})


def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write ``config_resolved.yaml`` into the run directory (rank 0), and log it with ``print_config``."""
    if rank_zero_only.rank != 0:  # type: ignore[attr-defined]  # Lightning sets .rank on the function at import
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(OmegaConf.create(resolved(cfg)))
    (output_dir / "config_resolved.yaml").write_text(text)
    if cfg.get("print_config", False):
        log.info("Resolved config (also in %s):\n%s", output_dir / "config_resolved.yaml", text)


def pair_input_sizes() -> dict[str, Any]:
    """The ``input_size`` of every pair config the package ships, by name (to suggest pairs that fit a dataset)."""
    pairs = sorted((CONF_DIR / "pair").glob("*.yaml"))  # mappings: OmegaConf.load's ListConfig case does not occur
    return {path.stem: cast(DictConfig, OmegaConf.load(path)).get("input_size") for path in pairs}


def has_discriminator(cfg: DictConfig) -> bool:
    """Whether the method's module takes a discriminator, so the ``regularizer`` group's callbacks apply to it."""
    return cfg.method.module.get("discriminator") is not None


__all__ = [
    "CONF_DIR",
    "SEARCH_PATH",
    "build",
    "has_discriminator",
    "merged",
    "plain",
    "resolved",
    "save_resolved_config",
]
