"""Every registered architecture: shapes, the uniform interface, the feature tap, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_advkd.models import ClassifierNet, create_model, get_model_entry, list_models

# Exact parameter counts of our implementations: (10 classes, 100 classes, num_features). Computed once from the code;
# a change here means the architecture changed.
EXPECTED: dict[str, tuple[int, int, int]] = {
    "resnet8": (78_042, 83_892, 64),
    "resnet14": (175_258, 181_108, 64),
    "resnet20": (272_474, 278_324, 64),
    "resnet32": (466_906, 472_756, 64),
    "resnet44": (661_338, 667_188, 64),
    "resnet56": (855_770, 861_620, 64),
    "resnet110": (1_730_714, 1_736_564, 64),
    "resnet8x4": (1_210_410, 1_233_540, 256),
    "resnet32x4": (7_410_730, 7_433_860, 256),
    "resnet164": (1_703_258, 1_726_388, 256),
    "wrn_16_1": (175_066, 180_916, 64),
    "wrn_16_2": (691_674, 703_284, 128),
    "wrn_40_1": (563_930, 569_780, 64),
    "wrn_40_2": (2_243_546, 2_255_156, 128),
    "wrn_28_10": (36_479_194, 36_536_884, 640),
    "vgg8": (3_918_858, 3_965_028, 512),
    "vgg11": (9_231_114, 9_277_284, 512),
    "vgg13": (9_416_010, 9_462_180, 512),
    "mobilenetv2_x0_5": (697_546, 812_836, 1280),
    "mobilenetv2_x1_0": (2_237_770, 2_353_060, 1280),
    "shufflenetv2_x0_5": (351_466, 443_716, 1024),
    "shufflenetv2_x1_0": (1_263_278, 1_355_528, 1024),
    "shufflenetv2_x1_5": (2_488_298, 2_580_548, 1024),
    "shufflenetv2_x2_0": (5_337_450, 5_521_860, 2048),
    "lenet5": (61_706, 69_356, 84),
    "nin": (958_794, 976_164, 192),
}

# Independent reference: sizes reported in the papers and the KD literature (millions of parameters, classes,
# relative tolerance). He et al. 2016 (ResNet-20/56/110 with option-B shortcuts: 0.27/0.86/1.73 M at 10 classes;
# pre-activation ResNet-164: 1.7 M); Zagoruyko & Komodakis 2016 (WRN-28-10: 36.5 M); CRD (Tian et al. 2020) table
# of CIFAR-100 models.
LITERATURE: list[tuple[str, float, int, float]] = [
    ("resnet20", 0.27, 10, 0.01),
    ("resnet56", 0.86, 10, 0.01),
    ("resnet110", 1.73, 10, 0.01),
    ("resnet164", 1.70, 10, 0.01),
    ("resnet8x4", 1.23, 100, 0.01),
    ("resnet32x4", 7.43, 100, 0.01),
    ("wrn_16_2", 0.70, 100, 0.01),
    ("wrn_40_2", 2.25, 100, 0.01),
    ("wrn_28_10", 36.5, 10, 0.01),
    ("vgg8", 3.96, 100, 0.01),
    ("vgg13", 9.46, 100, 0.01),
    ("mobilenetv2_x0_5", 0.81, 100, 0.01),
    ("shufflenetv2_x1_0", 1.36, 100, 0.01),
]

ALL_MODELS = list_models()


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input(name: str, batch: int = 2, in_chans: int | None = None) -> torch.Tensor:
    c, h, w = get_model_entry(name).default_cfg.input_size
    return torch.randn(batch, in_chans or c, h, w, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    """One 10-class instance of every model, in eval mode, shared by the tests of this module."""
    torch.manual_seed(0)
    return {name: create_model(name).eval() for name in ALL_MODELS}


def test_every_model_is_documented_here() -> None:
    assert sorted(EXPECTED) == ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shapes_and_interface(built: dict[str, nn.Module], name: str) -> None:
    model = built[name]
    entry = get_model_entry(name)
    assert isinstance(model, ClassifierNet)
    assert entry.default_cfg == type(model).default_cfg
    assert (model.num_classes, model.in_chans) == (10, entry.default_cfg.input_size[0])
    x = _input(name)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        logits_again = model.forward_head(features)
    assert logits.shape == (2, model.num_classes)
    assert torch.isfinite(logits).all()
    assert pooled.shape == (2, model.num_features) == (2, EXPECTED[name][2])
    torch.testing.assert_close(logits_again, logits)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_last_linear_is_the_classifier_fed_by_pre_logits(built: dict[str, nn.Module], name: str) -> None:
    model = built[name]
    last_name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert last is model.get_classifier()
    assert (last.in_features, last.out_features) == (model.num_features, model.num_classes), last_name

    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    try:
        x = _input(name)
        with torch.no_grad():
            logits = model(x)
            pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    finally:
        handle.remove()
    assert len(seen) == 1, "the classifier must run exactly once per forward"
    torch.testing.assert_close(seen[0], pooled)
    torch.testing.assert_close(last(pooled), logits)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_counts(built: dict[str, nn.Module], name: str) -> None:
    at_10, at_100, num_features = EXPECTED[name]
    assert _count(built[name]) == at_10
    # A 100-class head adds 90 rows of (num_features weights + 1 bias): checks the count and the head width together.
    assert at_100 == at_10 + 90 * (num_features + 1)


@pytest.mark.parametrize(("name", "millions", "num_classes", "rel"), LITERATURE)
def test_parameter_counts_match_the_literature(name: str, millions: float, num_classes: int, rel: float) -> None:
    at_10, at_100, _ = EXPECTED[name]
    count = at_10 if num_classes == 10 else at_100
    assert count / 1e6 == pytest.approx(millions, rel=rel)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_num_classes_100_and_in_chans_1(name: str) -> None:
    """The two knobs every family takes; the 100-class model is also counted."""
    model = create_model(name, num_classes=100, in_chans=1).eval()
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1
    # Going from the default channels to one removes (default - 1) input planes of the stem's kernels.
    removed = (get_model_entry(name).default_cfg.input_size[0] - 1) * stem.kernel_size[0] * stem.kernel_size[1]
    assert _count(model) == EXPECTED[name][1] - removed * stem.out_channels
    assert model.in_chans == 1
    with torch.no_grad():
        assert model(_input(name, in_chans=1)).shape == (2, 100)


@pytest.mark.parametrize("name", ["lenet5", "nin"])
@pytest.mark.parametrize("size", [28, 32])
def test_fashion_mnist_pair_takes_28_and_32_pixel_inputs(built: dict[str, nn.Module], name: str, size: int) -> None:
    with torch.no_grad():
        assert built[name](torch.randn(2, 1, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet20", "wrn_16_2", "vgg8", "mobilenetv2_x0_5", "shufflenetv2_x1_0"])
def test_cifar_families_accept_other_input_sizes(built: dict[str, nn.Module], name: str) -> None:
    """Global average pooling, not a fixed 8x8 pooling: 64x64 inputs (Tiny-ImageNet-sized) go through."""
    with torch.no_grad():
        assert built[name](torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_train_mode_backward_reaches_every_parameter() -> None:
    model = create_model("resnet8").train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_wide_resnet_dropout_is_configurable() -> None:
    model = create_model("wrn_16_1", drop_rate=0.3).train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    first = model(x)
    torch.manual_seed(1)
    assert not torch.equal(first, model(x))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("wrn_16_1", drop_rate=1.0)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnet20", {"num_classes": 0}, "num_classes"),
        ("resnet20", {"in_chans": 0}, "in_chans"),
        ("nin", {"drop_rate": -0.1}, "drop_rate"),
        ("lenet5", {"num_classes": 2.5}, "num_classes"),
    ],
)
def test_bad_sizes_fail_at_construction(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


def test_family_classes_validate_their_depth() -> None:
    from lightning_advkd.models.cifar_resnet import CifarResNet, PreActResNet
    from lightning_advkd.models.wide_resnet import WideResNet

    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(depth=21)
    with pytest.raises(ValueError, match="9n \\+ 2"):
        PreActResNet(depth=21)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=20)
