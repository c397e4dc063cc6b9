"""torchvision classification models behind the ``"tv_<name>"`` / ``"torchvision.<name>"`` prefixes.

Models are built with ``weights=None``: nothing is downloaded (this project runs offline and its teachers are trained
or loaded from files). To use torchvision's ImageNet weights, download the ``.pth`` file elsewhere and pass it as
``create_model("tv_resnet152", checkpoint="resnet152-f82ba261.pth")``; a plain state_dict like that loads as is.

The built model gets three attributes so it reads like ours: ``num_classes``, ``in_chans`` and ``num_features`` (the
``in_features`` of its last ``nn.Linear``, the distillation module's default feature tap). It does not get
``forward_features`` / ``forward_head``. Some torchvision heads put dropout (``mobilenet_*``, ``efficientnet_*``,
``mnasnet*``, ``vgg*``, ``alexnet``) or hidden layers (``vgg*``, ``alexnet``, ``maxvit_t``) before their last
``nn.Linear``; squeezenet has none at all (its classifier is a convolution), so it gets no ``num_features``.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import torchvision
from torch import nn

from lightning_advkd.models._registry import ModelCfg, UnknownModelError, unknown_external_name_message

__all__ = ["STEM_CONV", "create_torchvision_model", "list_torchvision_models"]

# Name prefix -> path of the stem convolution, replaced when in_chans != 3. Families not listed (googlenet and
# inception_v3, whose transform_input assumes RGB; the vision transformers; squeezenet) refuse in_chans != 3.
STEM_CONV: dict[str, str] = {
    "resnet": "conv1",
    "resnext": "conv1",
    "wide_resnet": "conv1",
    "vgg": "features.0",
    "alexnet": "features.0",
    "densenet": "features.conv0",
    "mobilenet_v2": "features.0.0",
    "mobilenet_v3": "features.0.0",
    "efficientnet": "features.0.0",
    "convnext": "features.0.0",
    "mnasnet": "layers.0",
    "shufflenet_v2": "conv1.0",
    "regnet": "stem.0",
}


@functools.cache
def list_torchvision_models() -> list[str]:
    """Names of torchvision's classification models (what ``"tv_<name>"`` accepts), sorted."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def create_torchvision_model(name: str, num_classes: int | None = None, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Build ``torchvision.models.<name>(weights=None, num_classes=..., **kwargs)``, adapting the stem to ``in_chans``.

    Args:
        name: torchvision model name without prefix, e.g. ``"resnet18"``.
        num_classes: Number of classes; torchvision's default (1000) if ``None``.
        in_chans: Number of input channels. Other than 3, the stem convolution is replaced by a freshly initialised
            one (He-normal, fan-out) for the families of :data:`STEM_CONV`.
        **kwargs: Passed on to the torchvision builder (e.g. ``dropout``).

    Returns:
        The model, with ``num_classes``, ``in_chans`` and ``num_features`` attributes set.

    Raises:
        UnknownModelError: If torchvision has no classification model of that name (the message lists close names).
        ValueError: If ``in_chans != 3`` for a family whose stem is not adapted.

    Example:
        >>> model = create_torchvision_model("resnet18", num_classes=10, in_chans=1)
        >>> model.conv1.in_channels, model.num_features
        (1, 512)
    """
    known = list_torchvision_models()
    if name not in known:
        raise UnknownModelError(unknown_external_name_message(name, "tv_", known))
    stem_path = next((path for prefix, path in STEM_CONV.items() if name.startswith(prefix)), None)
    if in_chans != 3 and stem_path is None:
        raise ValueError(
            f"in_chans={in_chans} is not supported for torchvision's {name}: only the stems of "
            f"{sorted(STEM_CONV)} are adapted. Convert the inputs to 3 channels instead."
        )
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if in_chans != 3 and stem_path is not None:
        _replace_stem(model, stem_path, in_chans)

    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    model.num_classes = linears[-1].out_features if linears else int(kwargs.get("num_classes", 1000))
    model.in_chans = in_chans
    if linears:
        model.num_features = linears[-1].in_features
    side = 299 if name == "inception_v3" else 224
    model.default_cfg = ModelCfg(input_size=(in_chans, side, side), num_classes=model.num_classes)
    return model


def _replace_stem(model: nn.Module, path: str, in_chans: int) -> None:
    old = model.get_submodule(path)
    if not isinstance(old, nn.Conv2d) or old.in_channels != 3 or old.groups != 1:
        raise ValueError(f"Expected the stem {path!r} of {type(model).__name__} to be a 3-channel nn.Conv2d: {old}")
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        # nn.Conv2d types its attributes for any dimension (tuple[int, ...]); a Conv2d's hold two ints.
        kernel_size=cast("tuple[int, int]", old.kernel_size),
        stride=cast("tuple[int, int]", old.stride),
        padding=cast("str | tuple[int, int]", old.padding),
        dilation=cast("tuple[int, int]", old.dilation),
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attr, new)
