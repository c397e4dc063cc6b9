"""Logits read from networks that return tensors, tuples, dicts or ModelOutput-like objects; the default tap follows
the classifier that actually produces the logits."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_same_state, fit, state
from tiny_networks import IMAGE_SHAPE, TinyStudent, TinyTeacher, make_loader
from torch import Tensor, nn

from lightning_advkd import AdversarialDistillation, FeatureTapError, KnowledgeDistillation, OutputError, read_logits


class ModelOutput(dict):
    """What Hugging Face models return: a dict whose entries are also attributes."""

    def __getattr__(self, name: str) -> Tensor:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


class Returning(nn.Module):
    """A tiny network whose forward returns its logits as a tensor, a ``(features, logits)`` tuple, a dict, or a
    ModelOutput (with the features next to them)."""

    def __init__(self, network: TinyTeacher | TinyStudent, kind: str) -> None:
        super().__init__()
        self.network, self.kind = network, kind

    def forward(self, x: Tensor) -> object:
        net = self.network
        features = net.pool(net.body(x)).flatten(1)
        logits = net.fc(getattr(net, "dropout", nn.Identity())(features))
        if self.kind == "tuple":
            return features, logits
        if self.kind == "dict":
            return {"features": features, "logits": logits}
        if self.kind == "model_output":
            return ModelOutput(hidden_states=features, logits=logits)
        return logits


def pair(kind: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return Returning(TinyTeacher(), kind), Returning(TinyStudent(), kind)


@pytest.mark.parametrize("module_class", [AdversarialDistillation, KnowledgeDistillation])
@pytest.mark.parametrize("kind", ["tuple", "dict", "model_output"])
def test_any_output_trains_like_the_same_networks_returning_logits(module_class, kind):
    options = {"teacher_output": 1, "student_output": 1} if kind == "tuple" else {}
    modules = []
    for returning, extra in ((kind, options), ("tensor", {})):
        torch.manual_seed(1)
        module = module_class(*pair(returning), input_shape=IMAGE_SHAPE, **extra)
        fit(module, make_loader(), make_loader())
        modules.append(module)
    assert_same_state(state(modules[0].student), state(modules[1].student))
    assert modules[0].teacher_tap.tap == modules[1].teacher_tap.tap == "network.fc:input"


@pytest.mark.parametrize("spec", [1, "1", lambda output: output[1]])
def test_named_outputs(spec):
    features, logits = torch.zeros(2, 8), torch.ones(2, 3)
    if spec == "1":
        assert read_logits({"1": logits, "x": features}, spec) is logits
    else:
        assert read_logits((features, logits), spec) is logits


def test_ambiguous_output_is_an_error_at_construction_naming_the_option():
    with pytest.raises(OutputError, match=r"teacher returns a tuple of 2 tensors.*teacher_output="):
        AdversarialDistillation(*pair("tuple"), input_shape=IMAGE_SHAPE)
    with pytest.raises(OutputError, match="student_output=2 names nothing"):
        AdversarialDistillation(*pair("tuple"), input_shape=IMAGE_SHAPE, teacher_output=1, student_output=2)
    with pytest.raises(OutputError, match="holds no logits"):
        read_logits("text")


class HeadFirst(nn.Module):
    """Registers its classifier before another Linear: the last registered Linear is not the classifier."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.head = nn.Linear(width, 4)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.proj = nn.Linear(16, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.proj(self.body(x))))


def test_default_tap_follows_the_layer_that_produces_the_logits():
    torch.manual_seed(0)
    module = AdversarialDistillation(TinyTeacher(), HeadFirst(), input_shape=IMAGE_SHAPE)
    assert module.student_tap.tap == "head:input" and module.feature_widths == (24, 6)
    fit(module, make_loader())
    # Without an input shape the registration order stands in until the first batch shows the real classifier.
    with pytest.raises(FeatureTapError, match=r"logits come from layer 'head'.*student_tap='head:input'"):
        fit(AdversarialDistillation(TinyTeacher(), HeadFirst(width=4)), make_loader())
    with pytest.raises(ValueError, match="pass input_shape= to read them from a forward pass"):
        AdversarialDistillation(TinyTeacher(), HeadFirst(width=6))
