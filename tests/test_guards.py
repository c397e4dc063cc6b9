"""Bad inputs to the modules fail early with the fix named, or are reported once: Trainer options, empty data,
raw or wrongly shaped images, missing labels, NaN in validation inputs."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from helpers import fit
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_networks import IMAGE_SHAPE, TinyStudent, make_data, make_loader, make_networks
from torch.utils.data import DataLoader, TensorDataset

from lightning_advkd import AdversarialDistillation, KnowledgeDistillation, SupervisedClassifier


def modules() -> list[L.LightningModule]:
    return [
        AdversarialDistillation(*make_networks()),
        KnowledgeDistillation(*make_networks()),
        SupervisedClassifier(TinyStudent(), 4),
    ]


@pytest.mark.parametrize(
    ("option", "match"),
    [({"gradient_clip_val": 1.0}, "student_grad_clip"), ({"accumulate_grad_batches": 2}, r"accumulate_grad_batches=2")],
)
def test_trainer_options_of_automatic_optimization_point_to_the_module_own(option, match):
    with pytest.raises(ValueError, match=match):
        fit(AdversarialDistillation(*make_networks()), make_loader(), **option)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_raw_uint8_and_wrong_channel_inputs_name_the_expected_input(index):
    images, labels = make_data(32)
    raw = (images * 50 + 128).clamp(0, 255).to(torch.uint8)
    with pytest.raises(TypeError, match=r"torch.uint8 inputs.*floating-point"):
        fit(modules()[index], DataLoader(TensorDataset(raw, labels), batch_size=16))
    rgb = images.expand(-1, 3, -1, -1)
    with pytest.raises(ValueError, match=r"3 channels.*1-channel"):
        fit(modules()[index], DataLoader(TensorDataset(rgb, labels), batch_size=16))


def test_input_shape_gives_the_channel_count_too():
    module = AdversarialDistillation(*make_networks(), input_shape=IMAGE_SHAPE)
    with pytest.raises(ValueError, match="1-channel"):
        fit(module, DataLoader(TensorDataset(torch.zeros(8, 2, 8, 8)), batch_size=4))


def test_supervised_without_labels_says_so():
    with pytest.raises(ValueError, match="train batch 0 has none"):
        fit(SupervisedClassifier(TinyStudent(), 4), make_loader(labels=False))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_empty_training_set_is_an_error_also_when_resuming(index, tmp_path):
    empty = DataLoader(TensorDataset(torch.zeros(0, *IMAGE_SHAPE), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="training set is empty"):
        fit(modules()[index], empty)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    fit(modules()[index], make_loader(), enable_checkpointing=True, callbacks=[checkpoint])
    with pytest.raises(ValueError, match="training set is empty"):
        trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(modules()[index], empty, ckpt_path=str(tmp_path / "last.ckpt"))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_nan_in_validation_inputs_is_reported_once_naming_the_batch(index):
    images, labels = make_data(48)
    images[20] = float("nan")  # batch 1 of 3
    images[40] = float("nan")  # batch 2: not reported again
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(modules()[index], DataLoader(TensorDataset(images, labels), batch_size=16), verbose=False)
    reports = [str(w.message) for w in caught if "NaN or infinite inputs" in str(w.message)]
    assert len(reports) == 1 and "val batch 1 " in reports[0] and "1 of 16 samples" in reports[0]


def test_dict_batches_without_the_label_key_are_reported_once():
    images, labels = make_data(32)
    batches = [{"image": x, "target": y} for x, y in zip(images, labels, strict=True)]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (metrics,) = trainer.validate(AdversarialDistillation(*make_networks()), DataLoader(batches, batch_size=8))
    reports = [str(w.message) for w in caught if "without the label key 'label'" in str(w.message)]
    assert len(reports) == 1 and "'target'" in reports[0] and "label_key=" in reports[0]
    assert "val/agreement" in metrics and "val/student_acc" not in metrics
    module = AdversarialDistillation(*make_networks(), label_key="target")
    assert "val/student_acc" in trainer.validate(module, DataLoader(batches, batch_size=8), verbose=False)[0]
