"""The teacher-output cache: exact (same weights as live training), keyed to its teacher, refuses augmented data."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_same_state, assert_same_tree, fit, state
from tiny_networks import TinyStudent, TinyTeacher, make_data, make_networks
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from lightning_advkd import AdversarialDistillation, AdversarialSamples, TeacherOutputCache
from lightning_advkd._atomic import write_atomic
from lightning_advkd.collate import collate_samples
from lightning_advkd.distillation import KnowledgeDistillation


def trained_state(module, loader) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    fit(
        module,
        loader,
        max_epochs=2,
        callbacks=[AdversarialSamples()] if isinstance(module, AdversarialDistillation) else [],
    )
    return {k: v for k, v in state(module).items() if not k.startswith("teacher.")}


ATTENTION = {"kd_weight": 1.0, "attention_weight": 10.0, "attention_pairs": [("body", "body")]}
CRITIC_LAYERS = {"discriminator_layers": [("body", "body")], "input_shape": (1, 8, 8)}


@pytest.mark.parametrize(
    ("module_class", "options"),
    [
        (AdversarialDistillation, {}),
        (AdversarialDistillation, CRITIC_LAYERS),
        (KnowledgeDistillation, {"hint_weight": 1.0}),
        (KnowledgeDistillation, ATTENTION),
    ],
)
def test_cached_training_gives_the_same_weights_as_live_training(module_class, options):
    images, labels = make_data(64)
    dataset = TensorDataset(images, labels)
    live = trained_state(module_class(*make_networks(), **options), DataLoader(dataset, batch_size=16))
    teacher, student = make_networks()
    layers = [t for _, t in options.get("attention_pairs", options.get("discriminator_layers", []))]
    cache = TeacherOutputCache(dataset, teacher, batch_size=16, attention_layers=layers)  # same batches: bit-exact
    cached = trained_state(module_class(teacher, student, **options), DataLoader(cache, batch_size=16))
    assert_same_state(live, cached)


@pytest.mark.parametrize(
    ("module_class", "options"), [(KnowledgeDistillation, ATTENTION), (AdversarialDistillation, CRITIC_LAYERS)]
)
def test_modules_reading_attention_maps_refuse_a_cache_without_them(module_class, options):
    images, labels = make_data(32)
    teacher, student = make_networks()
    cache = TeacherOutputCache(TensorDataset(images, labels), teacher)
    module = module_class(teacher, student, **options)
    with pytest.raises(ValueError, match=r"attention_layers=\['body'\]"):
        fit(module, DataLoader(cache, batch_size=8))


def test_cache_matches_the_teacher_and_skips_its_forward():
    teacher, student = make_networks()
    images, labels = make_data(32)
    cache = TeacherOutputCache(TensorDataset(images, labels), teacher, batch_size=7)
    assert teacher.training  # the cache restores the mode it found
    with torch.no_grad():
        logits = teacher.eval()(images)
    torch.testing.assert_close(cache.logits, logits, rtol=1e-5, atol=1e-6)
    assert cache.features.shape == (32, 24)
    assert torch.equal(cache[3]["label"], labels[3])

    calls = []
    module = AdversarialDistillation(teacher, student)
    module.teacher.register_forward_hook(lambda *args: calls.append(1))
    fit(module, DataLoader(cache, batch_size=8), limit_val_batches=0)
    assert calls == []  # the teacher never ran during training


def test_batches_read_whole_equal_the_samples_collated_one_by_one():
    images, labels = make_data(32)
    cache = TeacherOutputCache(TensorDataset(images, labels), TinyTeacher(), attention_layers=["body"])
    indices = [5, 0, 31, 5, 17]
    read_whole = cache.__getitems__(indices)
    expected = default_collate([cache[index] for index in indices])
    assert_same_tree(collate_samples(read_whole), expected)
    assert_same_tree(default_collate(read_whole), expected)  # other collate functions see the samples
    assert_same_tree(list(read_whole), [cache[index] for index in indices])
    loader = DataLoader(cache, batch_size=8, collate_fn=collate_samples)
    assert_same_tree(next(iter(loader)), next(iter(DataLoader(cache, batch_size=8))))


def test_outputs_of_another_teacher_are_refused():
    images, labels = make_data(32)
    cache = TeacherOutputCache(TensorDataset(images, labels), TinyTeacher())
    module = AdversarialDistillation(TinyTeacher(), TinyStudent())
    with pytest.raises(ValueError, match="different teacher or feature tap"):
        fit(module, DataLoader(cache, batch_size=8))


class Augmented(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return torch.randn(1, 8, 8), 0


def test_randomly_augmented_data_is_refused():
    with pytest.raises(ValueError, match="augment=False"):
        TeacherOutputCache(Augmented(), TinyTeacher())


def test_on_disk_copy_is_reused_and_keyed_by_the_inputs(tmp_path):
    teacher = TinyTeacher()
    images, labels = make_data(32)
    first = TeacherOutputCache(TensorDataset(images, labels), teacher, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    marked = {**first.outputs, "teacher_features": first.features * 0 + 7}
    write_atomic(files[0], lambda f: torch.save(marked, f))  # mark the file (a valid entry: checksum rewritten)
    again = TeacherOutputCache(TensorDataset(images, labels), teacher, cache_dir=tmp_path)
    assert torch.all(again.features == 7)  # read from disk, not recomputed
    other_images = images.clone()
    other_images[0] += 1
    TeacherOutputCache(TensorDataset(other_images, labels), teacher, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # different inputs: a different file
    assert not any(m._forward_hooks for m in teacher.modules())  # the cache's tap is removed


def test_caches_with_and_without_attention_maps_live_side_by_side(tmp_path):
    teacher = TinyTeacher()
    dataset = TensorDataset(*make_data(32))
    plain = TeacherOutputCache(dataset, teacher, cache_dir=tmp_path)
    with_maps = TeacherOutputCache(dataset, teacher, cache_dir=tmp_path, attention_layers=["body"])
    assert len(list(tmp_path.glob("*.pt"))) == 2  # one file each: neither overwrites the other
    again = TeacherOutputCache(dataset, teacher, cache_dir=tmp_path)
    assert set(again.outputs) == set(plain.outputs) and "teacher_attention:body" in with_maps.outputs
    assert not list(tmp_path.glob("*.corrupt*"))  # no entry was taken for damaged and rebuilt
