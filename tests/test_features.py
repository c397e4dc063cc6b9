"""Tests of ``lightning_advkd.features``: forward-hook feature taps, their defaults, errors and the width adapter."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lightning_advkd.features import (
    FeatureTap,
    FeatureTapError,
    make_adapter,
    parse_tap,
    static_feature_width,
    static_num_classes,
)


class ClassifierNet(nn.Module):
    """A custom network whose classifier is an attribute named ``classifier``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class NestedHeadNet(nn.Module):
    """The last Linear sits two levels deep, inside a head that has a hidden Linear of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(16, 6), nn.ReLU(), nn.Sequential(nn.Dropout(0.1), nn.Linear(6, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


class ConvOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(x)).flatten(1)


class WithUnusedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.aux = nn.Linear(6, 2)  # registered but never called in forward
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))


class TupleBlock(nn.Module):
    """Returns a non-tensor first, then the feature, then extras (as attention blocks and RNNs do)."""

    def forward(self, x: Tensor) -> tuple[None, Tensor, dict[str, Tensor]]:
        return None, 2.0 * x, {"aux": -x}


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = TupleBlock()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        _, h, _ = self.block(x)
        return self.fc(h)


class TokenNet(nn.Module):
    """A transformer-like network whose blocks output ``(N, L, C)`` token sequences."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.blocks = nn.Sequential(nn.Identity())
        self.head = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.blocks(self.embed(x))
        return self.head(tokens.mean(dim=1))


def test_parse_tap() -> None:
    assert parse_tap("fc:input") == ("fc", True)
    assert parse_tap("fc:output") == ("fc", False)
    assert parse_tap("layer3.1") == ("layer3.1", False)


# --- default taps -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    return torchvision.models.resnet18(num_classes=10).eval()


def test_default_tap_on_torchvision_resnet18(resnet18: nn.Module) -> None:
    model = resnet18
    tap = FeatureTap(model)
    assert tap.tap == "fc:input"
    assert static_feature_width(model, tap.tap) == 512
    assert static_num_classes(model) == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), tap.capture():
        logits = model(x)
    feature = tap.pop()
    assert logits.shape == (1, 10)
    assert feature.shape == (1, 512)
    # the tapped tensor is exactly what fc consumes
    torch.testing.assert_close(model.fc(feature), logits)


def test_named_conv_taps_on_resnet18_are_pooled(resnet18: nn.Module) -> None:
    model = resnet18
    layer3 = FeatureTap(model, "layer3")
    layer4 = FeatureTap(model, "layer4")
    assert static_feature_width(model, "layer4") is None  # a conv stage has no static width
    with torch.no_grad(), layer3.capture(), layer4.capture():
        model(torch.randn(2, 3, 64, 64))
    assert layer3.pop().shape == (2, 256)
    assert layer4.pop().shape == (2, 512)


def test_default_tap_on_sequential() -> None:
    net = nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 2))
    tap = FeatureTap(net)
    assert tap.tap == "2:input"
    x = torch.randn(3, 4)
    with tap.capture():
        net(x)
    torch.testing.assert_close(tap.pop(), torch.relu(net[0](x)))


def test_default_tap_on_custom_module_with_classifier_attribute() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net)
    assert tap.tap == "classifier:input"
    assert static_feature_width(net, tap.tap) == 8
    assert static_num_classes(net) == 5
    x = torch.randn(2, 3, 6, 6)
    with tap.capture():
        net(x)
    torch.testing.assert_close(tap.pop(), net.features(x))


def test_default_tap_on_nested_head_is_the_last_linear() -> None:
    net = NestedHeadNet()
    tap = FeatureTap(net)
    assert tap.tap == "head.2.1:input"
    assert static_feature_width(net, tap.tap) == 6
    assert static_num_classes(net) == 3
    net.eval()  # no dropout: the input of head.2.1 is then relu(head.0(...))
    x = torch.randn(2, 3, 4)
    with tap.capture():
        net(x)
    expected = torch.relu(net.head[0](net.backbone(x)))
    torch.testing.assert_close(tap.pop(), expected)


def test_no_linear_raises_with_the_tap_hint() -> None:
    with pytest.raises(FeatureTapError, match="student_tap=") as info:
        FeatureTap(ConvOnly(), role="student")
    assert "no nn.Linear" in str(info.value)
    assert static_num_classes(ConvOnly()) is None


def test_feature_tap_error_is_a_value_error() -> None:
    assert issubclass(FeatureTapError, ValueError)


# --- named taps, pooling, inputs --------------------------------------------------------------------------------------


def test_named_output_tap_pools_conv_maps() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net, "features.0")
    x = torch.randn(2, 3, 5, 7)
    with tap.capture():
        net(x)
    torch.testing.assert_close(tap.pop(), net.features[0](x).mean(dim=(2, 3)))


def test_explicit_output_suffix_is_the_output() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net, "classifier:output")
    assert static_feature_width(net, "classifier:output") == 5
    assert static_feature_width(net, "classifier") == 5
    x = torch.randn(2, 3, 4, 4)
    with tap.capture():
        logits = net(x)
    torch.testing.assert_close(tap.pop(), logits)


def test_pool_false_keeps_the_map() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net, "features.1", pool=False)
    with tap.capture():
        net(torch.randn(2, 3, 5, 5))
    assert tap.pop().shape == (2, 8, 5, 5)


def test_token_sequences_are_pooled_over_tokens() -> None:
    net = TokenNet()
    tap = FeatureTap(net, "blocks")
    x = torch.randn(2, 6, 3)  # (N, L, C_in)
    with tap.capture():
        net(x)
    feature = tap.pop()
    assert feature.shape == (2, 8)
    torch.testing.assert_close(feature, net.embed(x).mean(dim=1))


def test_input_tap_reads_the_layer_input() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net, "features.2:input")  # input of the pooling layer: the ReLU map, pooled
    x = torch.randn(2, 3, 4, 4)
    with tap.capture():
        net(x)
    torch.testing.assert_close(tap.pop(), torch.relu(net.features[0](x)).mean(dim=(2, 3)))


def test_tuple_outputs_yield_their_first_tensor() -> None:
    net = TupleNet()
    tap = FeatureTap(net, "block")
    x = torch.randn(3, 4)
    with tap.capture():
        net(x)
    torch.testing.assert_close(tap.pop(), 2.0 * x)


def test_lstm_tuple_output_yields_the_sequence_output() -> None:
    lstm = nn.LSTM(3, 5, batch_first=True)
    net = nn.Sequential()
    net.add_module("rnn", lstm)
    tap = FeatureTap(net, "rnn")
    with tap.capture():
        out, _ = net(torch.randn(2, 7, 3))
    torch.testing.assert_close(tap.pop(), out.mean(dim=1))


# --- errors -----------------------------------------------------------------------------------------------------------


def test_misspelt_layer_lists_close_names(resnet18: nn.Module) -> None:
    model = resnet18
    with pytest.raises(FeatureTapError, match="teacher has no layer named 'lyaer4'") as info:
        FeatureTap(model, "lyaer4", role="teacher")
    assert "Close names:" in str(info.value)
    assert "layer4" in str(info.value)


def test_misspelt_input_tap_lists_close_names() -> None:
    with pytest.raises(FeatureTapError, match="clasifier") as info:
        FeatureTap(ClassifierNet(), "clasifier:input")
    assert "classifier" in str(info.value).split("Close names:")[1]


def test_unrelated_name_has_no_close_names_but_still_fails() -> None:
    with pytest.raises(FeatureTapError, match="no layer named 'zzzzzz'") as info:
        FeatureTap(ClassifierNet(), "zzzzzz")
    assert "Close names" not in str(info.value)


def test_static_feature_width_on_missing_layer_raises() -> None:
    with pytest.raises(FeatureTapError, match="no layer named"):
        static_feature_width(ClassifierNet(), "classifer:input")


def test_layer_not_called_in_forward_raises_on_pop() -> None:
    net = WithUnusedLayer()
    tap = FeatureTap(net, "aux:input", role="teacher")
    with tap.capture():
        net(torch.randn(2, 4))
    with pytest.raises(FeatureTapError, match="yielded no tensor") as info:
        tap.pop()
    assert "'aux:input'" in str(info.value)
    assert "teacher_tap=" in str(info.value)


def test_hooks_record_nothing_outside_capture() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net)
    net(torch.randn(2, 3, 4, 4))  # outside capture
    with pytest.raises(FeatureTapError, match="yielded no tensor"):
        tap.pop()


def test_calls_after_capture_do_not_overwrite_the_captured_value() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net)
    x = torch.randn(2, 3, 4, 4)
    with tap.capture():
        net(x)
    net(torch.randn(5, 3, 4, 4))  # outside capture: must be ignored
    torch.testing.assert_close(tap.pop(), net.features(x))


def test_pop_forgets_the_value() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net)
    with tap.capture():
        net(torch.randn(1, 3, 4, 4))
    tap.pop()
    with pytest.raises(FeatureTapError, match="yielded no tensor"):
        tap.pop()


def test_capture_starts_empty_and_stops_recording_after_an_exception() -> None:
    net = ClassifierNet()
    tap = FeatureTap(net)
    with tap.capture():
        net(torch.randn(1, 3, 4, 4))
    with tap.capture():  # a new capture forgets the unpopped value of the last one
        pass
    with pytest.raises(FeatureTapError):
        tap.pop()
    with pytest.raises(RuntimeError, match="boom"), tap.capture():
        raise RuntimeError("boom")
    net(torch.randn(1, 3, 4, 4))
    with pytest.raises(FeatureTapError):
        tap.pop()


# --- static helpers and the adapter -----------------------------------------------------------------------------------


def test_static_feature_width_of_linear_and_non_linear_layers() -> None:
    net = NestedHeadNet()
    assert static_feature_width(net, "backbone.1:input") == 12
    assert static_feature_width(net, "backbone.1") == 16
    assert static_feature_width(net, "backbone.2") is None  # ReLU: needs a forward pass


def test_make_adapter_identity_for_equal_widths() -> None:
    adapter = make_adapter(64, 64)
    assert isinstance(adapter, nn.Identity)
    assert not list(adapter.parameters())


def test_make_adapter_linear_for_different_widths() -> None:
    adapter = make_adapter(64, 512)
    assert isinstance(adapter, nn.Linear)
    assert (adapter.in_features, adapter.out_features) == (64, 512)
    assert adapter(torch.randn(3, 64)).shape == (3, 512)
    assert sum(p.numel() for p in adapter.parameters()) == 64 * 512 + 512
