"""The registry: names, listing, errors for unknown names, kwargs handling."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from lightning_advkd.models import (
    ModelCfg,
    UnknownModelError,
    _registry,
    create_model,
    get_model_entry,
    is_model,
    list_models,
    register_model,
)

FAMILIES = {
    "cifar_resnet": ["resnet110", "resnet14", "resnet164", "resnet20", "resnet32", "resnet32x4", "resnet44",
                     "resnet56", "resnet8", "resnet8x4"],
    "wide_resnet": ["wrn_16_1", "wrn_16_2", "wrn_28_10", "wrn_40_1", "wrn_40_2"],
    "vgg": ["vgg11", "vgg13", "vgg8"],
    "mobilenetv2": ["mobilenetv2_x0_5", "mobilenetv2_x1_0"],
    "shufflenetv2": ["shufflenetv2_x0_5", "shufflenetv2_x1_0", "shufflenetv2_x1_5", "shufflenetv2_x2_0"],
    "lenet": ["lenet5"],
    "nin": ["nin"],
}  # fmt: skip


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry, so test registrations do not leak into other tests."""
    registry = dict(_registry._REGISTRY)
    monkeypatch.setattr(_registry, "_REGISTRY", registry)
    return registry


def test_list_models_is_sorted_and_filters() -> None:
    assert list_models() == sorted(name for names in FAMILIES.values() for name in names)
    assert list_models("wrn_40_*") == ["wrn_40_1", "wrn_40_2"]
    assert list_models("resnet*x4") == ["resnet32x4", "resnet8x4"]
    assert list_models("nothing*") == []
    for family, names in FAMILIES.items():
        assert list_models(family=family) == names
    assert list_models("resnet1*", family="cifar_resnet") == ["resnet110", "resnet14", "resnet164"]


def test_entries_carry_family_and_default_cfg() -> None:
    assert get_model_entry("resnet20").family == "cifar_resnet"
    assert get_model_entry("resnet20").default_cfg == ModelCfg(input_size=(3, 32, 32), num_classes=10)
    assert get_model_entry("lenet5").default_cfg.input_size == (1, 28, 28)
    assert get_model_entry("nin").default_cfg.input_size == (1, 28, 28)


def test_is_model() -> None:
    assert is_model("resnet20")
    assert is_model("tv_resnet18") and is_model("torchvision.resnet18")
    assert not is_model("resnet2")
    assert not is_model("tv_resnet19")
    assert not is_model("tv_fasterrcnn_resnet50_fpn"), "only classification models"


@pytest.mark.parametrize(
    ("name", "close"),
    [
        ("resnet2", ["resnet20", "resnet32"]),
        ("wrn_40_3", ["wrn_40_2", "wrn_40_1"]),
        ("Resnet20", ["resnet20"]),
        ("vgg16", ["vgg13"]),
        ("tv_resnet19", ["tv_resnet18"]),
        ("torchvision.resnet19", ["tv_resnet18"]),
    ],
)
def test_unknown_name_lists_close_names(name: str, close: list[str]) -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model(name)
    message = str(info.value)
    assert repr(name) in message or repr(name.replace("torchvision.", "tv_")) in message
    for candidate in close:
        assert candidate in message
    if not name.startswith(("tv_", "torchvision.")):
        assert "list_models()" in message


def test_unknown_name_error_is_a_key_and_value_error_with_readable_text() -> None:
    with pytest.raises(KeyError):
        create_model("no_such_net")
    with pytest.raises(ValueError, match=r"^Unknown model 'no_such_net'"):
        get_model_entry("no_such_net")


def test_torchvision_name_without_prefix_points_at_the_prefix() -> None:
    with pytest.raises(UnknownModelError, match="'tv_resnet18'"):
        create_model("resnet18")


def test_none_kwargs_are_dropped() -> None:
    model = create_model("wrn_16_1", num_classes=None, in_chans=None, checkpoint=None, drop_rate=None)
    assert (model.num_classes, model.in_chans) == (10, 3)
    assert all(block.drop_rate == 0.0 for block in model.block1.layer)


def test_unknown_kwarg_is_not_swallowed() -> None:
    with pytest.raises(TypeError, match="widen"):
        create_model("resnet20", widen=2)


@pytest.mark.parametrize("flag", [{"pretrained": True}, {"weights": "DEFAULT"}])
def test_pretrained_weights_are_refused_with_the_fix(flag: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="checkpoint="):
        create_model("resnet20", **flag)
    assert create_model("resnet8", pretrained=False).num_classes == 10


def test_register_model_bare_and_with_arguments(scratch_registry: dict) -> None:
    @register_model
    def tiny_test_net(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 4, num_classes))

    @register_model(family="toy", default_cfg=ModelCfg(input_size=(1, 2, 2), num_classes=3))
    def tiny_test_net_2(num_classes: int = 3, in_chans: int = 1) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 4, num_classes))

    assert is_model("tiny_test_net") and "tiny_test_net_2" in list_models("tiny_*")
    assert get_model_entry("tiny_test_net").family == "test_models_registry"
    assert get_model_entry("tiny_test_net_2").family == "toy"
    assert get_model_entry("tiny_test_net_2").default_cfg.input_size == (1, 2, 2)
    model = create_model("tiny_test_net_2", num_classes=5, in_chans=2)
    assert model(torch.zeros(1, 2, 2, 2)).shape == (1, 5)


def test_register_model_refuses_a_taken_name_and_reserved_prefixes(scratch_registry: dict) -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model
        def resnet20() -> nn.Module:
            return nn.Linear(1, 1)

    with pytest.raises(ValueError, match="reserved"):

        @register_model
        def tv_mine() -> nn.Module:
            return nn.Linear(1, 1)

    assert get_model_entry("resnet20").fn.__module__ == "lightning_advkd.models.cifar_resnet"
