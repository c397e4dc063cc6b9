"""The examples in the docstrings of lightning_advkd.models run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lightning_advkd.models._registry",
    "lightning_advkd.models._checkpoint",
    "lightning_advkd.models.cifar_resnet",
    "lightning_advkd.models.wide_resnet",
    "lightning_advkd.models.vgg",
    "lightning_advkd.models.mobilenetv2",
    "lightning_advkd.models.shufflenetv2",
    "lightning_advkd.models.lenet",
    "lightning_advkd.models.nin",
    "lightning_advkd.models.torchvision_models",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
