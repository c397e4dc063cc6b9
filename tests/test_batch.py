"""Tests of ``lightning_advkd.batch.split_batch`` over the batch layouts users' dataloaders produce."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch

from lightning_advkd.batch import split_batch

X = torch.randn(4, 3, 2, 2)
Y = torch.tensor([0, 1, 2, 3])


def test_tensor_batch_has_no_labels() -> None:
    inputs, labels = split_batch(X)
    assert inputs is X
    assert labels is None


def test_tuple_batch() -> None:
    inputs, labels = split_batch((X, Y))
    assert inputs is X
    assert labels is Y


def test_tuple_batch_with_extra_elements() -> None:
    inputs, labels = split_batch((X, Y, torch.zeros(4), "meta"))
    assert inputs is X
    assert labels is Y


def test_list_batch() -> None:
    inputs, labels = split_batch([X, Y])
    assert inputs is X
    assert labels is Y


def test_one_element_list_has_no_labels() -> None:
    inputs, labels = split_batch([X])
    assert inputs is X
    assert labels is None


def test_non_tensor_second_element_is_not_a_label() -> None:
    inputs, labels = split_batch((X, ["a", "b", "c", "d"]))
    assert inputs is X
    assert labels is None


def test_namedtuple_batch() -> None:
    Sample = namedtuple("Sample", ["image", "target"])
    inputs, labels = split_batch(Sample(X, Y))
    assert inputs is X
    assert labels is Y


def test_dict_batch_default_keys() -> None:
    inputs, labels = split_batch({"image": X, "label": Y, "path": ["p"] * 4})
    assert inputs is X
    assert labels is Y


def test_dict_batch_custom_keys() -> None:
    batch = {"pixel_values": X, "labels": Y, "image": torch.zeros(1), "label": torch.zeros(1)}
    inputs, labels = split_batch(batch, input_key="pixel_values", label_key="labels")
    assert inputs is X
    assert labels is Y


def test_dict_batch_without_or_with_non_tensor_label() -> None:
    assert split_batch({"image": X})[1] is None
    assert split_batch({"image": X, "label": [0, 1, 2, 3]})[1] is None


def test_dict_missing_input_key_names_the_fix() -> None:
    with pytest.raises(KeyError, match="input_key=") as info:
        split_batch({"img": X, "label": Y})
    message = str(info.value)
    assert "'image'" in message
    assert "['img', 'label']" in message  # lists the keys the batch has


def test_dict_missing_custom_input_key() -> None:
    with pytest.raises(KeyError, match="'pixel_values'"):
        split_batch({"image": X}, input_key="pixel_values")


@pytest.mark.parametrize("batch", [("not a tensor", Y), [[1.0, 2.0], Y], (None,)])
def test_non_tensor_first_element(batch: object) -> None:
    with pytest.raises(TypeError, match="first element of a tuple/list batch must be the input tensor"):
        split_batch(batch)


@pytest.mark.parametrize("batch", [3, None, "images", (), [], {X.sum().item()}, 2.5])
def test_unsupported_batch_types(batch: object) -> None:
    with pytest.raises(TypeError, match="unsupported batch type"):
        split_batch(batch)
