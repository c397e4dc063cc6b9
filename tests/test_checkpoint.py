"""Checkpoints of AdversarialDistillation: teacher left out, exact resume, callback state, student export."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import assert_same_state, build, state
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_networks import TinyStudent, TinyTeacher, make_data, make_loader, make_networks
from torch import nn

from lightning_advkd import AdversarialDistillation, AdversarialSamples, WeightPenalty, load_student_state_dict


def trainer(tmp_path, max_epochs: int, callbacks=(), **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False, default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True), *callbacks], **kwargs,
    )  # fmt: skip


def regularizers():
    return [AdversarialSamples(adaptive_threshold=0.51), WeightPenalty("l2", weight=1e-3)]


def full_state(module: AdversarialDistillation) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state(module).items() if not k.startswith("teacher.")}


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    L.seed_everything(0, verbose=False)
    uninterrupted = build()
    regs = regularizers()
    trainer(tmp_path / "a", max_epochs=3, callbacks=regs).fit(uninterrupted, make_loader(shuffle=True))

    L.seed_everything(0, verbose=False)
    first_half = build()
    first_regs = regularizers()
    trainer(tmp_path / "b", max_epochs=1, callbacks=first_regs).fit(first_half, make_loader(shuffle=True))
    assert first_regs[0].multiplier > 1.0  # adaptive mode acted, so its state must travel in the checkpoint
    L.seed_everything(123, verbose=False)  # a different RNG state: the checkpoint must restore it
    resumed = build()
    resumed_regs = regularizers()
    trainer(tmp_path / "c", max_epochs=3, callbacks=resumed_regs).fit(
        resumed, make_loader(shuffle=True), ckpt_path=tmp_path / "b" / "last.ckpt"
    )
    assert (resumed.student_step, resumed.discriminator_step) == (12, 12)
    assert (uninterrupted.student_step, uninterrupted.discriminator_step) == (12, 12)
    assert_same_state(full_state(uninterrupted), full_state(resumed))
    assert [r.state_dict() for r in regs] == [r.state_dict() for r in resumed_regs]


def test_checkpoint_leaves_the_teacher_out(tmp_path):
    big_teacher = TinyTeacher(width=512)  # 512 * 9 + 512 * 4 floats: far bigger than the student
    module = AdversarialDistillation(big_teacher, TinyStudent())
    trainer(tmp_path / "out", max_epochs=1).fit(module, make_loader())
    slim = torch.load(tmp_path / "out" / "last.ckpt", weights_only=False)
    assert not [k for k in slim["state_dict"] if k.startswith("teacher.")]
    assert {"student.fc.weight", "discriminator.net.0.weight", "adapter.weight"} <= slim["state_dict"].keys()
    assert len(slim["optimizer_states"]) == 2
    assert slim["lightning_advkd"]["student_step"] == 4

    with_teacher = AdversarialDistillation(TinyTeacher(width=512), TinyStudent(), include_teacher_in_checkpoint=True)
    trainer(tmp_path / "in", max_epochs=1).fit(with_teacher, make_loader())
    teacher_bytes = sum(p.numel() * p.element_size() for p in big_teacher.state_dict().values())
    size_out = (tmp_path / "out" / "last.ckpt").stat().st_size
    size_in = (tmp_path / "in" / "last.ckpt").stat().st_size
    assert size_in - size_out >= 0.9 * teacher_bytes


def test_load_from_checkpoint_needs_the_same_teacher(tmp_path):
    module = build()
    trainer(tmp_path, max_epochs=1).fit(module, make_loader())
    path = tmp_path / "last.ckpt"
    teacher, student = make_networks()
    restored = AdversarialDistillation.load_from_checkpoint(path, teacher=teacher, student=student)
    assert_same_state(full_state(module), full_state(restored))
    assert restored.student_step == module.student_step

    with pytest.raises(ValueError, match="needs a teacher"):
        AdversarialDistillation.load_from_checkpoint(path, student=TinyStudent())
    other_teacher, student = make_networks(seed=99)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not the one the checkpoint was trained with"):
        AdversarialDistillation.load_from_checkpoint(path, teacher=other_teacher, student=student)
    assert path.read_bytes() == before  # the failed load leaves the checkpoint intact


def test_student_state_dict_from_checkpoint_works_without_this_package(tmp_path):
    module = build()
    trainer(tmp_path, max_epochs=1).fit(module, make_loader())
    weights = load_student_state_dict(tmp_path / "last.ckpt")
    plain = TinyStudent()
    plain.load_state_dict(weights)
    plain.eval()
    module.eval()
    x = make_data(8, seed=3)[0]
    with torch.no_grad():
        torch.testing.assert_close(plain(x), module(x), rtol=0, atol=0)
    with pytest.raises(KeyError, match="student"):
        torch.save({"state_dict": {"x": torch.zeros(1)}}, tmp_path / "other.ckpt")
        load_student_state_dict(tmp_path / "other.ckpt")


def test_exported_student_pickles_without_feature_hooks(tmp_path):
    module = build()
    exported = module.export_student()
    torch.save(exported, tmp_path / "student.pt")
    loaded = torch.load(tmp_path / "student.pt", weights_only=False)
    assert isinstance(loaded, nn.Module)
    assert not any(m._forward_hooks for m in loaded.modules())
    assert not any(m._forward_hooks for m in module.student.modules())  # taps hook only while features are read


def test_callback_state_round_trips():
    reg = AdversarialSamples(adaptive_threshold=0.7)
    reg.multiplier, reg.step = 3.5, 42
    other = AdversarialSamples(adaptive_threshold=0.7)
    other.load_state_dict(reg.state_dict())
    assert (other.multiplier, other.step) == (3.5, 42)
    assert reg.state_key == other.state_key
    assert WeightPenalty("l1").state_key != WeightPenalty("l2").state_key


def lambda_regularizers():
    # a lambda schedule: its repr holds a memory address that differs between processes
    return [AdversarialSamples(adaptive_threshold=0.51, schedule=lambda step: 1.0 + 0.01 * step)]


def test_resume_restores_a_lambda_scheduled_regularizer(tmp_path):
    L.seed_everything(0, verbose=False)
    uninterrupted, regs = build(), lambda_regularizers()
    trainer(tmp_path / "a", max_epochs=2, callbacks=regs).fit(uninterrupted, make_loader(shuffle=True))

    L.seed_everything(0, verbose=False)
    first, first_regs = build(), lambda_regularizers()
    trainer(tmp_path / "b", max_epochs=1, callbacks=first_regs).fit(first, make_loader(shuffle=True))
    assert first_regs[0].multiplier > 1.0 and first_regs[0].step == 4
    resumed, resumed_regs = build(), lambda_regularizers()
    assert resumed_regs[0].state_key == first_regs[0].state_key  # another lambda object, the same key
    trainer(tmp_path / "c", max_epochs=2, callbacks=resumed_regs).fit(
        resumed, make_loader(shuffle=True), ckpt_path=tmp_path / "b" / "last.ckpt"
    )
    assert [r.state_dict() for r in regs] == [r.state_dict() for r in resumed_regs]
    assert_same_state(full_state(uninterrupted), full_state(resumed))


def test_loading_a_checkpoint_for_evaluation_leaves_the_programs_random_state_alone(tmp_path):
    module = build()
    trainer(tmp_path, max_epochs=1).fit(module, make_loader())
    teacher, student = make_networks()
    torch.manual_seed(1234)
    AdversarialDistillation(teacher, student)  # construction draws the adapter's initial weights
    expected = torch.rand(3)
    torch.manual_seed(1234)
    AdversarialDistillation.load_from_checkpoint(tmp_path / "last.ckpt", teacher=teacher, student=student)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)  # not reseeded from the checkpoint
