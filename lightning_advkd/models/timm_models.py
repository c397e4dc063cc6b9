"""timm models behind the ``"timm.<name>"`` / ``"timm/<name>"`` prefixes.

timm is optional: ``pip install lightning_advkd[timm]``.

Built with ``pretrained=False``: nothing is downloaded; pass a weight file as ``checkpoint=`` to ``create_model``.
timm models already have ``forward_features``, ``forward_head(x, pre_logits=True)``, ``num_classes`` and
``num_features``. For most of them the final classifier is their last ``nn.Linear``; models with a pre-logits MLP
(timm's ``head_hidden_size``) feed it a vector wider or narrower than ``num_features``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lightning_advkd.models._registry import UnknownModelError, unknown_external_name_message

__all__ = ["create_timm_model"]


def create_timm_model(name: str, **kwargs: Any) -> nn.Module:
    """Build ``timm.create_model(name, pretrained=False, **kwargs)``.

    Args:
        name: timm model name without prefix, e.g. ``"resnet18"`` (a pretrained tag like ``".a1_in1k"`` is allowed;
            it only selects timm's default config, no weights are fetched).
        **kwargs: ``num_classes``, ``in_chans`` and anything else ``timm.create_model`` accepts.

    Returns:
        The model.

    Raises:
        ImportError: If timm is not installed.
        UnknownModelError: If timm has no model of that name (the message lists close names).
    """
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            f"Model 'timm.{name}' needs timm, which is not installed: pip install lightning_advkd[timm]"
        ) from err
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as err:
        if "Unknown model" not in str(err):
            raise
        raise UnknownModelError(unknown_external_name_message(name, "timm.", timm.list_models())) from err
