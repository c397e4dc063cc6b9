"""The augmented-view teacher cache: exact against live augmented training, keyed, resumable, safe to share."""

from __future__ import annotations

import logging
import pickle
import threading
import time

import numpy as np
import pytest
import torch
from helpers import assert_same_state, assert_same_tree, fit, state
from tiny_networks import IMAGE_SHAPE, NUM_CLASSES, TinyTeacher, make_networks
from torch.utils.data import default_collate

from lightning_advkd import (
    AdversarialDistillation,
    AdversarialSamples,
    AugmentedViewCache,
    AugmentedViews,
    TeacherOutputCache,
    ViewCacheMismatchError,
    cache_folder_name,
    view_loader,
)
from lightning_advkd.collate import collate_samples
from lightning_advkd.data import TensorImageTransform

N = 32


def make_views(num_views: int = 2, seed: int = 3, padding: int = 2, hflip: bool = True, n: int = N) -> AugmentedViews:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *IMAGE_SHAPE), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n) % NUM_CLASSES
    transform = TensorImageTransform([0.5], [0.25], padding=padding, hflip=hflip)
    return AugmentedViews(images, labels, transform, num_views=num_views, seed=seed)


def trained_state(module: AdversarialDistillation, loader, epochs: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    fit(module, loader, max_epochs=epochs, callbacks=[AdversarialSamples()], limit_val_batches=0)
    return {k: v for k, v in state(module).items() if not k.startswith("teacher.")}


def count_calls(network: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    network.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_training_on_the_cache_ends_bit_identical_to_live_training_on_the_same_views(tmp_path):
    views = make_views(num_views=2)  # 3 epochs: views 0, 1, then 0 again (cycled)
    live = trained_state(AdversarialDistillation(*make_networks()), view_loader(views, 16, shuffle=False))

    teacher, student = make_networks()
    cache = AugmentedViewCache(views, teacher, path=tmp_path / "views", batch_size=16)  # the training batches
    module = AdversarialDistillation(teacher, student)
    calls = count_calls(module.teacher)
    cached = trained_state(module, cache.dataloader(16, shuffle=False))
    assert calls == []  # the teacher never ran during training: every output came from the cache
    assert any(k.startswith("student.") for k in cached) and any(k.startswith("discriminator.") for k in cached)
    assert_same_state(live, cached)  # student, adapter and discriminator weights, bit for bit

    # The comparison can fail: other views (another seed) end elsewhere.
    other = trained_state(AdversarialDistillation(*make_networks()), view_loader(make_views(seed=4), 16, shuffle=False))
    assert not torch.equal(other["student.fc.weight"], live["student.fc.weight"])


def test_every_shuffled_epoch_hands_each_sample_the_view_the_teacher_saw():
    views = make_views(num_views=2)
    views.labels = torch.arange(N)  # a label per sample: the batch tells which samples it holds
    teacher = TinyTeacher().eval()
    cache = AugmentedViewCache(views, teacher, batch_size=5)
    loader = cache.dataloader(8, generator=torch.Generator().manual_seed(1))
    orders = []
    for epoch in range(3):
        indices, images, logits = [], [], []
        for batch in loader:
            indices.append(batch["label"])
            images.append(batch["image"])
            logits.append(batch["teacher_logits"])
        order = torch.cat(indices)
        orders.append(order)
        expected = views.view_batch(epoch % 2, order)
        assert torch.equal(torch.cat(images), expected)
        with torch.no_grad():
            torch.testing.assert_close(torch.cat(logits), teacher(expected), rtol=1e-5, atol=1e-6)
    assert not torch.equal(orders[0], orders[2])  # shuffled anew every epoch, view cycled
    assert not torch.equal(views.view_batch(0, torch.arange(N)), views.view_batch(1, torch.arange(N)))


def test_samples_have_the_teacher_output_cache_format():
    views = make_views()
    teacher = TinyTeacher()
    cache = AugmentedViewCache(views, teacher, attention_layers=["body"])
    plain = TeacherOutputCache(torch.utils.data.TensorDataset(torch.zeros(2, *IMAGE_SHAPE), torch.zeros(2)), teacher)
    sample = cache[1, 7]
    assert set(sample) == set(plain[0]) | {"teacher_attention:body"}
    assert torch.equal(sample["teacher_key"], plain[0]["teacher_key"])
    assert sample["teacher_features"].shape == (24,) and sample["teacher_logits"].shape == (NUM_CLASSES,)
    assert sample["teacher_attention:body"].shape == IMAGE_SHAPE[1:]
    assert torch.equal(sample["image"], views[1, 7][0]) and int(sample["label"]) == 7 % NUM_CLASSES
    with pytest.raises(TypeError, match="ViewSampler"):
        cache[7]
    with pytest.raises(IndexError, match="holds 2 views"):
        cache[2, 7]


@pytest.mark.parametrize("dataset", ["views", "unlabeled views", "cache"])
def test_batches_read_whole_equal_the_samples_collated_one_by_one(dataset):
    views = make_views(num_views=3)
    if dataset == "unlabeled views":
        views.labels = None
    source = AugmentedViewCache(views, TinyTeacher()) if dataset == "cache" else views
    # items of two views, interleaved and out of order, as a custom sampler could give them
    items = [(2, 5), (0, 9), (2, 1), (0, 30), (2, 9), (1, 0)]
    read_whole = source.__getitems__(items)
    one_by_one = [source[item] for item in items]
    expected = default_collate(one_by_one)
    fast = collate_samples(read_whole)
    assert type(fast) is type(expected)
    assert_same_tree(fast, expected)
    assert len(read_whole) == len(items)
    assert_same_tree(read_whole[1:3], one_by_one[1:3])
    assert_same_tree(default_collate(read_whole), expected)  # other collate functions see the samples
    with pytest.raises(IndexError):
        read_whole[6]
    loader = view_loader(source, 4, shuffle=False)
    assert loader.collate_fn is collate_samples
    first = next(iter(loader))
    assert_same_tree(first, default_collate([source[0, index] for index in range(4)]))


def test_outputs_of_another_teacher_are_refused_by_the_module():
    cache = AugmentedViewCache(make_views(), TinyTeacher())
    module = AdversarialDistillation(*make_networks())
    with pytest.raises(ValueError, match="different teacher or feature tap"):
        fit(module, cache.dataloader(8), limit_val_batches=0)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"teacher_seed": 1}, "teacher"),
        ({"padding": 4}, "augmentation recipe"),
        ({"hflip": False}, "augmentation recipe"),
        ({"num_views": 3}, "num_views"),
        ({"seed": 4}, "view seed"),
        ({"dtype": "float16"}, "storage dtype"),
        ({"n": N - 1}, "dataset"),
    ],
)
def test_a_cache_built_for_something_else_is_refused_naming_it(tmp_path, change, named):
    path = tmp_path / "views"
    AugmentedViewCache(make_views(), make_networks()[0], path=path)
    options = dict(change)
    teacher = make_networks(options.pop("teacher_seed", 0))[0]
    dtype = options.pop("dtype", "float32")
    with pytest.raises(ViewCacheMismatchError, match=f"built for another {named}") as error:
        AugmentedViewCache(make_views(**options), teacher, path=path, dtype=dtype)
    assert "Delete that folder" in str(error.value) and "or pass another path" in str(error.value)
    AugmentedViewCache(make_views(), make_networks()[0], path=path)  # the matching one is reused
    assert cache_folder_name(teacher, make_views(**options), dtype=dtype) != cache_folder_name(
        make_networks()[0], make_views()
    )


def test_an_interrupted_build_resumes_at_the_first_unfinished_view(tmp_path):
    views = make_views(num_views=3)
    path = tmp_path / "views"
    teacher = make_networks()[0].train()
    calls = count_calls(teacher)

    def interrupt(*args):
        if len(calls) == 4:  # second batch of view 1
            raise KeyboardInterrupt

    handle = teacher.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        AugmentedViewCache(views, teacher, path=path, batch_size=16)
    handle.remove()
    assert teacher.training  # the mode it had
    assert sorted(p.name for p in path.glob("*.done")) == ["view-00000.done"]

    calls.clear()
    resumed = AugmentedViewCache(views, teacher, path=path, batch_size=16)
    assert len(calls) == 4  # views 1 and 2, two batches each; view 0 was kept
    fresh = AugmentedViewCache(views, teacher, batch_size=16)
    for name in resumed.output_names:
        assert np.array_equal(resumed.arrays[name], fresh.arrays[name]), name
    calls.clear()
    AugmentedViewCache(views, teacher, path=path, batch_size=16)
    assert calls == []  # complete: reused as it is


def test_two_builders_of_one_cache_wait_for_each_other_and_build_it_once(tmp_path, caplog):
    views, path = make_views(num_views=2), tmp_path / "views"
    first_teacher, second_teacher = make_networks()[0], make_networks()[0]  # the same weights: the same cache
    first_calls, second_calls = count_calls(first_teacher), count_calls(second_teacher)
    release = threading.Event()

    def hold(*args) -> None:  # the first build stays inside its lock until released
        release.wait(timeout=20)

    first_teacher.register_forward_hook(hold)
    built = {}

    def build(name: str, teacher: torch.nn.Module) -> None:
        built[name] = AugmentedViewCache(views, teacher, path=path)

    caplog.set_level(logging.INFO, logger="lightning_advkd._atomic")
    first = threading.Thread(target=build, args=("first", first_teacher))
    first.start()
    wait_until(lambda: (path / "meta.json").is_file())  # the first builder holds the lock
    second = threading.Thread(target=build, args=("second", second_teacher))
    second.start()
    wait_until(lambda: "is building it" in caplog.text)  # the second one waits for the lock
    assert "second" not in built
    release.set()
    first.join()
    second.join()
    assert len(first_calls) == 2 and second_calls == []  # built once; the second builder reused it
    assert np.array_equal(built["second"].arrays["teacher_logits"], built["first"].arrays["teacher_logits"])


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_memory_mapped_files_fp16_storage_and_pickling(tmp_path):
    views = make_views(num_views=2)
    teacher = make_networks()[0]
    full = AugmentedViewCache(views, teacher, path=tmp_path / "fp32")
    half = AugmentedViewCache(views, teacher, path=tmp_path / "fp16", dtype="float16")
    assert isinstance(full.arrays["teacher_features"], np.memmap) and full.arrays["teacher_features"].shape == (
        2,
        N,
        24,
    )
    assert sorted(p.name for p in (tmp_path / "fp32").glob("teacher*.npy")) == [
        "teacher_features.npy",
        "teacher_logits.npy",
    ]
    assert half.nbytes * 2 == full.nbytes
    assert half[1, 3]["teacher_logits"].dtype == torch.float32
    torch.testing.assert_close(half[1, 3]["teacher_logits"], full[1, 3]["teacher_logits"], rtol=1e-2, atol=1e-2)
    payload = pickle.dumps(full)  # what a DataLoader worker receives: paths, not the memory-mapped outputs
    assert len(payload) < full.nbytes + views.images.numel()
    again = pickle.loads(payload)
    assert torch.equal(again[1, 3]["teacher_features"], full[1, 3]["teacher_features"])
