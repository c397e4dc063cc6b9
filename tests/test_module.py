"""The two-optimizer loop of AdversarialDistillation: frozen teacher, schedule, labels unused, precision, options."""

from __future__ import annotations

import copy
import functools

import lightning as L
import pytest
import torch
from helpers import assert_same_state, build, fit, state
from lightning.pytorch.callbacks import Callback
from tiny_networks import IMAGE_SHAPE, NUM_CLASSES, TinyStudent, TinyTeacher, make_data, make_loader, make_networks
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_advkd import AdversarialDistillation, AdversarialSamples, FeatureTapError, NonFiniteLossError


class TeacherModeRecorder(Callback):
    def __init__(self) -> None:
        self.teacher_training: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.teacher_training.append(any(m.training for m in pl_module.teacher.modules()))


def test_teacher_is_bit_identical_stays_in_eval_and_never_gets_a_gradient():
    module = build()
    before = state(module.teacher)
    recorder = TeacherModeRecorder()
    fit(module, make_loader(shuffle=True), max_epochs=2, callbacks=[AdversarialSamples(), recorder])
    assert_same_state(before, state(module.teacher))  # BatchNorm buffers included
    assert all(p.grad is None and not p.requires_grad for p in module.teacher.parameters())
    assert recorder.teacher_training == [False] * 8
    module.train()
    assert not any(m.training for m in module.teacher.modules())


def test_student_and_discriminator_both_update_at_the_configured_ratio():
    module = build(discriminator_steps=3)
    student_before, disc_before = state(module.student), state(module.discriminator)
    trainer = fit(module, make_loader(n=64, batch_size=16))
    assert module.student_step == 4
    assert module.discriminator_step == 12
    assert trainer.global_step == 16  # Lightning counts every optimizer step
    for before, after in ((student_before, state(module.student)), (disc_before, state(module.discriminator))):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))


class CountingSGD(torch.optim.SGD):
    def __init__(self, params, log: list[str], name: str, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.log, self.name = log, name

    def step(self, closure=None):
        self.log.append(self.name)
        return super().step(closure)


@pytest.mark.parametrize(("discriminator_first", "expected"), [(False, ["S", "D", "D"]), (True, ["D", "D", "S"])])
def test_update_order_follows_the_configuration(discriminator_first, expected):
    calls: list[str] = []
    module = build(
        discriminator_steps=2,
        discriminator_first=discriminator_first,
        student_optimizer=functools.partial(CountingSGD, log=calls, name="S", lr=0.01),
        discriminator_optimizer=functools.partial(CountingSGD, log=calls, name="D", lr=0.01),
    )
    fit(module, make_loader(n=32, batch_size=16))
    assert calls == expected * 2


def test_one_student_forward_per_step_and_batchnorm_updated_once():
    module = build()
    forwards = []
    module.student.register_forward_hook(lambda *args: forwards.append(1))
    fit(module, make_loader(n=64, batch_size=16), limit_val_batches=0)
    assert len(forwards) == 4
    assert int(module.student.body[1].num_batches_tracked) == 4


def run_with_batches(loader: DataLoader) -> dict[str, torch.Tensor]:
    L.seed_everything(7, verbose=False)
    module = build(seed=1)
    fit(module, loader, max_epochs=2, callbacks=[AdversarialSamples()])
    return {**state(module.student), **{f"d.{k}": v for k, v in state(module.discriminator).items()}}


def test_training_never_reads_labels():
    images, labels = make_data(64)
    scrambled = labels[torch.randperm(64, generator=torch.Generator().manual_seed(3))]
    with_labels = run_with_batches(DataLoader(TensorDataset(images, labels), batch_size=16))
    with_scrambled = run_with_batches(DataLoader(TensorDataset(images, scrambled), batch_size=16))
    without_labels = run_with_batches(DataLoader(TensorDataset(images), batch_size=16))
    as_dicts = run_with_batches(DataLoader([{"image": x} for x in images], batch_size=16))
    assert_same_state(with_labels, with_scrambled)
    assert_same_state(with_labels, without_labels)
    assert_same_state(with_labels, as_dicts)


def test_metrics_with_and_without_labels():
    module = build()
    trainer = fit(module, make_loader(), make_loader(labels=True))
    for name in ("val/student_acc", "val/teacher_acc", "val/agreement", "val/d_acc_real", "val/d_acc_fake"):
        assert name in trainer.callback_metrics
    assert "val/student_acc_top5" not in trainer.callback_metrics  # 4 classes: top-5 makes no sense
    for name in ("train/loss/student_adversarial", "train/loss/student_kd", "train/loss/discriminator_gan",
                 "train/d_gap", "train/lr/student", "train/grad_norm/discriminator"):  # fmt: skip
        assert name in trainer.callback_metrics, name

    module = build()
    trainer = fit(module, make_loader(), make_loader(labels=False))
    assert "val/agreement" in trainer.callback_metrics
    assert "val/student_acc" not in trainer.callback_metrics


def test_custom_input_key_for_dict_batches():
    images, _ = make_data(32)
    module = build(input_key="pixels")
    fit(module, DataLoader([{"pixels": x} for x in images], batch_size=16))
    assert module.student_step == 2


def test_bf16_mixed_precision_on_cpu():
    module = build()
    before = state(module.student)
    trainer = fit(module, make_loader(), precision="bf16-mixed", callbacks=[AdversarialSamples()])
    assert module.student_step == 4
    assert torch.isfinite(trainer.callback_metrics["train/loss/student"])
    assert any(not torch.equal(before[k], v) for k, v in state(module.student).items())


def test_max_student_steps_counts_student_updates_only():
    module = build(discriminator_steps=2, max_student_steps=5)
    trainer = fit(module, make_loader(n=128, batch_size=8), max_epochs=3)
    assert module.student_step == 5
    assert module.discriminator_step == 10
    assert trainer.global_step == 15


def test_gradient_clipping_bounds_each_update():
    sgd = functools.partial(torch.optim.SGD, lr=1.0)
    module = build(student_optimizer=sgd, discriminator_optimizer=sgd, student_grad_clip=1e-3,
                   discriminator_grad_clip=1e-3)  # fmt: skip
    student, disc = state(module.student), state(module.discriminator)
    fit(module, make_loader(n=16, batch_size=16), limit_val_batches=0)
    for before, network in ((student, module.student), (disc, module.discriminator)):
        after = {k: v for k, v in network.named_parameters()}
        change = torch.linalg.vector_norm(torch.cat([(after[k] - before[k]).flatten() for k in after]))
        assert 0 < change <= 1e-3 + 1e-7


def test_gradient_accumulation_matches_one_big_batch():
    def run(batch_size: int, accumulate: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        teacher = TinyTeacher()
        student = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        sgd = functools.partial(torch.optim.SGD, lr=0.1)
        module = AdversarialDistillation(
            teacher, student, adversarial_dropout=0.0, accumulate_grad_batches=accumulate,
            student_optimizer=sgd, discriminator_optimizer=sgd,
        )  # fmt: skip
        module.discriminator.load_state_dict(reference_discriminator.state_dict())
        fit(module, make_loader(n=32, batch_size=batch_size), limit_val_batches=0)
        assert module.student_step == 2
        return {**state(module.student), **{f"d.{k}": v for k, v in state(module.discriminator).items()}}

    torch.manual_seed(0)
    reference_discriminator = build().discriminator
    accumulated, big = run(batch_size=8, accumulate=2), run(batch_size=16, accumulate=1)
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_schedulers_step_per_step_or_per_epoch(interval):
    scheduler = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    module = build(student_scheduler=scheduler, discriminator_scheduler=scheduler, scheduler_interval=interval)
    trainer = fit(module, make_loader(n=64, batch_size=16), max_epochs=2, limit_val_batches=0)
    steps = 8 if interval == "step" else 2
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**steps)
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5**steps)


def test_adapter_and_discriminator_sized_from_discovered_features():
    module = build()
    assert module.feature_widths == (24, 8)
    assert (module.adapter.in_features, module.adapter.out_features) == (8, 24)
    assert module.discriminator.in_features == 24
    same_width = AdversarialDistillation(TinyTeacher(width=8), TinyStudent(width=8))
    assert isinstance(same_width.adapter, nn.Identity)


def test_named_conv_taps_need_and_use_input_shape():
    teacher, student = make_networks()
    with pytest.raises(FeatureTapError, match="input_shape"):
        AdversarialDistillation(teacher, student, teacher_tap="body", student_tap="body")
    module = AdversarialDistillation(teacher, student, teacher_tap="body", student_tap="body", input_shape=IMAGE_SHAPE)
    assert module.feature_widths == (24, 8)
    fit(module, make_loader(n=32))
    assert module.student_step == 2


def test_bad_input_fails_at_construction_with_the_fix():
    teacher, student = make_networks()
    with pytest.raises(FeatureTapError, match=r"Close names: .*body"):
        AdversarialDistillation(teacher, student, student_tap="bdy")
    # A tap on a layer the forward pass never calls.
    student.unused = nn.Linear(3, 3)
    with pytest.raises(FeatureTapError, match="yielded no tensor"):
        AdversarialDistillation(teacher, student, student_tap="unused", input_shape=IMAGE_SHAPE)
    with pytest.raises(ValueError, match="teacher predicts 4 classes but student 7"):
        AdversarialDistillation(TinyTeacher(), TinyStudent(num_classes=7))
    AdversarialDistillation(TinyTeacher(), TinyStudent(num_classes=7), kd_weight=0.0)  # no logit term: fine
    with pytest.raises(ValueError, match="needs a teacher"):
        AdversarialDistillation(student=TinyStudent())
    with pytest.raises(ValueError, match="data_term"), pytest.warns(DeprecationWarning, match="kd_weight"):
        build(data_term="l3")
    with pytest.raises(ValueError, match=r"loss weights must be >= 0.*hint_weight"):
        build(hint_weight=-1.0)
    with pytest.raises(ValueError, match="the student loss is empty"):
        build(adversarial_weight=0.0, kd_weight=0.0)


class NaNAfter(TensorDataset):
    """Inputs turn NaN from sample ``start`` on, so the loss goes non-finite mid-training."""

    def __init__(self, start: int) -> None:
        images, labels = make_data(64)
        images[start:] = float("nan")
        super().__init__(images, labels)


def test_non_finite_loss_stops_names_the_term_and_keeps_the_last_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    module = build()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite student loss at student step 2 .*'adversarial', 'kd'"):
        fit(module, DataLoader(NaNAfter(start=32), batch_size=16), enable_checkpointing=True, callbacks=[checkpoint])
    saved = sorted(tmp_path.glob("*.ckpt"))
    assert saved, "the checkpoint written before the failure must remain"
    restored = torch.load(saved[-1], weights_only=False)
    assert all(torch.isfinite(v).all() for v in restored["state_dict"].values() if v.is_floating_point())


def test_export_student_is_standalone_and_predicts_like_the_trained_one():
    module = build()
    fit(module, make_loader())
    exported = module.export_student()
    assert not any(m._forward_hooks for m in exported.modules())
    module.eval()
    x = make_data(8, seed=5)[0]
    with torch.no_grad():
        torch.testing.assert_close(exported(x), module(x), rtol=0, atol=0)
    clone = copy.deepcopy(exported)
    assert not clone.training
    assert clone(x).shape[1] == NUM_CLASSES


@pytest.mark.parametrize(("init_scale", "expected_steps"), [(2.0**8, 4), (2.0**120, 0)])
def test_16_mixed_skipped_steps_neither_count_nor_step_the_scheduler(init_scale, expected_steps):
    from lightning.pytorch.plugins import MixedPrecision

    scheduler = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    module = build(student_scheduler=scheduler, scheduler_interval="step")
    # A CPU GradScaler exercises the same code path as on a GPU; 2**120 overflows fp16 gradients on every step.
    plugin = MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))
    trainer = fit(module, make_loader(n=64, batch_size=16), plugins=[plugin], limit_val_batches=0)
    assert module.student_step == expected_steps
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**expected_steps)


def test_feature_hint_term_is_the_mse_of_adapted_student_and_teacher_features():
    module = build(hint_weight=0.5)
    images, labels = make_data(32)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, DataLoader(TensorDataset(images, labels), batch_size=32), verbose=False)
    module.eval()  # as during validation: BatchNorm on running statistics
    with torch.no_grad():
        teacher_features = module.teacher.pool(module.teacher.body(images)).flatten(1)
        student_features = module.student.pool(module.student.body(images)).flatten(1)
        expected = 0.5 * nn.functional.mse_loss(module.adapter(student_features), teacher_features)
    assert torch.allclose(trainer.callback_metrics["val/loss/student_hint"], expected)
    # Off by default, and the hint alone is a valid student loss.
    assert "val/loss/student_hint" not in trainer.validate(build(), make_loader(), verbose=False)[0]
    fit(build(hint_weight=1.0, adversarial_weight=0.0, kd_weight=0.0), make_loader())
