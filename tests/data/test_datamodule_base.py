"""The shared datamodule machinery: splits, eval transform on validation, seeding, loader options."""

from __future__ import annotations

import pytest
import torch

from lightning_advkd.data import DATAMODULES, FashionMNISTDataModule, ImageClassificationDataModule
from lightning_advkd.data.splits import seeded_split, split_size
from lightning_advkd.data.views import AugmentedViews, ViewSampler


def first_batch(dm: ImageClassificationDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(dm.train_dataloader()))


def test_registry_lists_every_datamodule() -> None:
    assert set(DATAMODULES) == {"cifar10", "cifar100", "svhn", "fashion_mnist", "imagenet", "unlabeled"}
    assert all(issubclass(cls, ImageClassificationDataModule) for cls in DATAMODULES.values())


@pytest.mark.parametrize(("val_split", "n_val"), [(0, 0), (10, 10), (0.25, 25), (0.1, 10), (99, 99)])
def test_split_sizes(fmnist_dir, val_split, n_val) -> None:
    dm = FashionMNISTDataModule(fmnist_dir, val_split=val_split)
    dm.setup("fit")
    assert len(dm.train_set) == 100 - n_val
    expected_val = n_val if n_val else 30  # no split: validation is the test set
    assert len(dm.val_set) == expected_val


def test_split_is_a_partition() -> None:
    train, val = seeded_split(50, 12, seed=3)
    assert len(val) == 12
    assert sorted(train + val) == list(range(50))
    assert (train, val) == seeded_split(50, 12, seed=3)
    assert val != seeded_split(50, 12, seed=4)[1]


@pytest.mark.parametrize("bad", [-1, 1.0, 1.5, -0.1, True, "10", None])
def test_malformed_val_split_fails_at_construction(fmnist_dir, bad) -> None:
    with pytest.raises(ValueError, match="val_split"):
        FashionMNISTDataModule(fmnist_dir, val_split=bad)


def test_split_leaving_no_training_sample_fails() -> None:
    with pytest.raises(ValueError, match="no training sample"):
        split_size(100, 100)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"num_workers": -1}, {"mean": (0.1, 0.2)}])
def test_bad_loader_arguments_fail_at_construction(fmnist_dir, kwargs) -> None:
    with pytest.raises(ValueError):
        FashionMNISTDataModule(fmnist_dir, **kwargs)


def test_val_split_uses_eval_transform_not_augmentation(fmnist_dir) -> None:
    dm = FashionMNISTDataModule(fmnist_dir, val_split=20, augment=True)
    dm.setup("fit")
    raw = dm._train_base
    mean, std = dm.mean[0], dm.std[0]
    # Validation samples: the normalized raw image, every time.
    for i in range(len(dm.val_set)):
        image, label = dm.val_set[i]
        raw_image, raw_label = raw[dm.val_set.indices[i]]
        assert label == raw_label
        torch.testing.assert_close(image, (raw_image.float() / 255 - mean) / std, rtol=0, atol=1e-6)
    # Train samples are augmented: repeated reads of the same sample differ (crop offsets, flips).
    torch.manual_seed(0)
    reads = torch.stack([dm.train_set[0][0] for _ in range(10)])
    assert not all(torch.equal(reads[0], r) for r in reads[1:])


def test_augment_false_trains_on_eval_images(fmnist_dir) -> None:
    dm = FashionMNISTDataModule(fmnist_dir, augment=False)
    dm.setup("fit")
    assert torch.equal(dm.train_set[3][0], dm.train_set[3][0])


def test_same_seed_same_split_and_first_batch(make_fmnist) -> None:
    folder = make_fmnist("fm", n_train=200)
    a = FashionMNISTDataModule(folder, batch_size=16, val_split=0.2, seed=7)
    b = FashionMNISTDataModule(folder, batch_size=16, val_split=0.2, seed=7)
    c = FashionMNISTDataModule(folder, batch_size=16, val_split=0.2, seed=8)
    for dm in (a, b, c):
        dm.setup("fit")
    assert a.val_set.indices == b.val_set.indices
    assert a.val_set.indices != c.val_set.indices
    # The global RNG drives the augmentation when num_workers=0: reset it; the shuffle itself ignores it.
    torch.manual_seed(123)
    xa, ya = first_batch(a)
    torch.manual_seed(123)
    xb, yb = first_batch(b)
    assert torch.equal(ya, yb) and torch.equal(xa, xb)
    torch.manual_seed(999)
    assert torch.equal(first_batch(FashionMNISTDataModule(folder, batch_size=16, val_split=0.2, seed=7))[1], ya)


def test_epochs_get_different_orders_and_state_dict_resumes_them(fmnist_dir) -> None:
    dm = FashionMNISTDataModule(fmnist_dir, batch_size=100, augment=False)
    loader = dm.train_dataloader()
    epoch0 = next(iter(loader))[1]
    state = dm.state_dict()
    epoch1 = next(iter(loader))[1]
    assert not torch.equal(epoch0, epoch1)
    # Rebuilding the loader (reload_dataloaders_every_n_epochs) does not rewind the order.
    assert not torch.equal(next(iter(dm.train_dataloader()))[1], epoch0)
    # A fresh datamodule restored from the state saved after epoch 0 replays epoch 1.
    resumed = FashionMNISTDataModule(fmnist_dir, batch_size=100, augment=False)
    resumed.load_state_dict(state)
    assert torch.equal(next(iter(resumed.train_dataloader()))[1], epoch1)


def test_workers_are_seeded_from_the_datamodule(fmnist_dir) -> None:
    """With workers, augmentation is reproducible from ``seed`` alone, whatever the global RNG says."""
    batches = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        dm = FashionMNISTDataModule(fmnist_dir, batch_size=32, num_workers=1, seed=5)
        assert dm.persistent_workers
        batches.append(first_batch(dm))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_loader_options(fmnist_dir) -> None:
    dm = FashionMNISTDataModule(fmnist_dir, batch_size=32, eval_batch_size=7, drop_last=True)
    assert dm.pin_memory == torch.cuda.is_available()
    assert dm.persistent_workers is False
    train, val, test = dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()
    assert len(train) == 100 // 32 and train.drop_last
    assert val.batch_size == 7 and not val.drop_last and len(val.dataset) == 30
    assert test.batch_size == 7
    assert all(len(x) == 32 for x, _ in train)


def test_view_sampler_cycles_views_and_follows_set_epoch() -> None:
    sampler = ViewSampler(range(3), num_views=2)
    assert [sorted({view for view, _ in sampler}) for _ in range(3)] == [[0], [1], [0]]  # counts passes itself
    sampler.set_epoch(5)
    assert {view for view, _ in sampler} == {1} and [i for _, i in sampler] == [0, 1, 2]
    unbounded = ViewSampler(range(2))
    assert [{view for view, _ in unbounded} for _ in range(3)] == [{0}, {1}, {2}]
    with pytest.raises(ValueError, match="num_views must be >= 1"):
        ViewSampler(range(3), num_views=0)


def test_views_are_read_by_view_and_index_only() -> None:
    from lightning_advkd.data import TensorImageTransform

    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = AugmentedViews(images, torch.arange(6), TensorImageTransform([0.5], [0.5], padding=2), num_views=3, seed=4)
    batch = views.__getitems__([(1, 4), (0, 2), (1, 0)])
    assert [label for _, label in batch] == [4, 2, 0]
    assert torch.equal(batch[0][0], views[1, 4][0]) and torch.equal(batch[1][0], views[0, 2][0])
    assert not torch.equal(views[1, 4][0], views[2, 4][0])
    with pytest.raises(TypeError, match="ViewSampler"):
        views[3]
    with pytest.raises(IndexError, match="view 3 out of range"):
        views[3, 0]


class RecordingViews(torch.utils.data.Dataset):
    def __init__(self, views: AugmentedViews) -> None:
        self.views, self.num_views, self.items = views, views.num_views, []

    def __len__(self) -> int:
        return len(self.views)

    def __getitems__(self, items):
        self.items.append(list(items))
        return self.views.__getitems__(items)


def test_num_views_trains_on_views_in_the_usual_order(fmnist_dir) -> None:
    plain = FashionMNISTDataModule(fmnist_dir, batch_size=16, val_split=10, seed=3)
    viewed = FashionMNISTDataModule(fmnist_dir, batch_size=16, val_split=10, seed=3, num_views=2)
    viewed.setup("fit")
    views = viewed.train_views
    assert isinstance(views, AugmentedViews) and (views.num_views, views.seed, len(views)) == (2, 3, 90)
    viewed.train_views = recorder = RecordingViews(views)  # what the app does with a cache of the same views
    loader, plain_loader = viewed.train_dataloader(), plain.train_dataloader()
    for epoch in range(3):
        recorder.items.clear()
        batches = list(loader)
        assert {view for batch in recorder.items for view, _ in batch} == {epoch % 2}  # views 0, 1, then 0 again
        labels = torch.cat([y for _, y in batches])
        assert torch.equal(labels, torch.cat([y for _, y in plain_loader]))  # the usual shuffled order
        expected = [views.__getitems__(items) for items in recorder.items]
        assert all(
            torch.equal(x, torch.stack([image for image, _ in samples]))
            for (x, _), samples in zip(batches, expected, strict=True)
        )
    with pytest.raises(ValueError, match="num_views must be >= 1"):
        FashionMNISTDataModule(fmnist_dir, num_views=0)
