"""torchvision and timm models behind their name prefixes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_advkd.models import UnknownModelError, create_model, load_weights
from lightning_advkd.models.torchvision_models import STEM_CONV, list_torchvision_models


@pytest.mark.parametrize("name", ["tv_resnet18", "torchvision.resnet18"])
def test_torchvision_resnet18_with_one_input_channel(name: str) -> None:
    model = create_model(name, num_classes=10, in_chans=1).eval()
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    assert (model.num_classes, model.num_features, model.in_chans) == (10, 512, 1)
    assert model.default_cfg.input_size == (1, 224, 224)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last is model.fc and last.in_features == model.num_features
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == 11_181_642 - 2 * 7 * 7 * 64


def test_torchvision_defaults_to_its_1000_classes() -> None:
    model = create_model("tv_resnet18")
    assert model.num_classes == 1000 and model.fc.out_features == 1000
    assert sum(p.numel() for p in model.parameters()) == 11_689_512


def test_torchvision_checkpoint_round_trip(tmp_path: Path) -> None:
    source = create_model("tv_resnet18", num_classes=10, in_chans=1).eval()
    torch.save(source.state_dict(), tmp_path / "tv.pth")
    target = create_model("tv_resnet18", num_classes=10, in_chans=1, checkpoint=tmp_path / "tv.pth").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))
    torch.save(source, tmp_path / "tv_module.pt")
    load_weights(create_model("tv_resnet18", num_classes=10, in_chans=1), tmp_path / "tv_module.pt")


def test_torchvision_resnet152_teacher_builds() -> None:
    """The paper's ImageNet teacher: built here, forward only at 32x32."""
    model = create_model("tv_resnet152", num_classes=10).eval()
    assert sum(p.numel() for p in model.parameters()) == 58_164_298
    assert model.num_features == 2048
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unadapted_stem_fails_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="in_chans=1 is not supported for torchvision's googlenet"):
        create_model("tv_googlenet", in_chans=1)


def test_unknown_torchvision_name() -> None:
    with pytest.raises(UnknownModelError, match="tv_resnet18"):
        create_model("tv_resnet19")
    with pytest.raises(UnknownModelError):
        create_model("tv_fasterrcnn_resnet50_fpn")


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "resnext50_32x4d",
        "wide_resnet50_2",
        "vgg11_bn",
        "alexnet",
        "densenet121",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "convnext_tiny",
        "mnasnet0_5",
        "shufflenet_v2_x0_5",
    ],
)
def test_stem_table_points_at_the_first_rgb_convolution(name: str) -> None:
    """Checked on the meta device (no memory, no init cost); regnet cannot be built there (see next test)."""
    path = next(path for prefix, path in STEM_CONV.items() if name.startswith(prefix))
    with torch.device("meta"):
        model = create_model(f"tv_{name}", num_classes=10, in_chans=2)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first is model.get_submodule(path) and first.in_channels == 2


def test_stem_table_regnet() -> None:
    model = create_model("tv_regnet_x_400mf", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_every_stem_table_entry_names_a_torchvision_family() -> None:
    names = list_torchvision_models()
    for prefix in STEM_CONV:
        assert any(name.startswith(prefix) for name in names), prefix


def test_timm_without_timm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    for name in ("timm.resnet18", "timm/resnet18"):
        with pytest.raises(ImportError, match=r"pip install lightning_advkd\[timm\]"):
            create_model(name)


def test_timm_model() -> None:
    pytest.importorskip("timm")
    model = create_model("timm.resnet18", num_classes=10, in_chans=1).eval()
    assert model.num_classes == 10
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 32, 32))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        assert model.forward_head(features).shape == (2, 10)
    with pytest.raises(UnknownModelError, match=r"timm\.resnet18"):
        create_model("timm.resnet19")
