"""One student objective: the same terms, the same numbers and the same training in every module; old names warn."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import assert_same_state, fit, state
from tiny_networks import TinyStudent, TinyTeacher, make_data, make_loader
from torch import nn

from lightning_advkd import AdversarialDistillation, KnowledgeDistillation, StudentObjective, SupervisedClassifier
from lightning_advkd import functional as AF


class StudentWithoutDropout(TinyStudent):
    """The adversarial module draws dropout samples for its discriminator; without the student's own dropout, the
    student's trajectory does not depend on how many random numbers were drawn besides it."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Identity()


def networks() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return TinyTeacher(), StudentWithoutDropout()


SGD = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)


@pytest.mark.parametrize(
    ("adversarial", "distillation"),
    [
        ({"data_term": "kl"}, {"kd_weight": 1.0}),
        ({"kd_weight": 0.0, "logit_l2_weight": 1.0}, {"kd_weight": 0.0, "logit_l2_weight": 1.0}),
        ({"hint_weight": 0.5, "kd_temperature": 2.0}, {"hint_weight": 0.5, "kd_temperature": 2.0}),
    ],
)
def test_adversarial_module_without_adversary_trains_exactly_like_knowledge_distillation(adversarial, distillation):
    with pytest.warns(DeprecationWarning) if "data_term" in adversarial else _no_warning():
        anc = AdversarialDistillation(*networks(), adversarial_weight=0.0, student_optimizer=SGD, **adversarial)
    kd = KnowledgeDistillation(*networks(), student_optimizer=SGD, **distillation)
    if "hint_weight" in distillation:  # the same adapter weights (built after the networks, from the same stream)
        kd.adapter.load_state_dict(anc.adapter.state_dict())
    fit(anc, make_loader(shuffle=False), max_epochs=2, limit_val_batches=0)
    fit(kd, make_loader(shuffle=False), max_epochs=2, limit_val_batches=0)
    assert_same_state(state(anc.student), state(kd.student))
    if "hint_weight" in distillation:
        assert_same_state(state(anc.adapter), state(kd.adapter))


class _no_warning:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_supervised_loss_is_the_objective_label_term_bit_for_bit():
    images, labels = make_data(16)
    logits = TinyStudent()(images)
    objective = StudentObjective(kd_weight=0.0, label_weight=1.0, label_smoothing=0.1)
    terms = objective.terms(logits, labels=labels)
    assert torch.equal(terms["label"], nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))


def test_terms_match_the_functional_definitions_in_a_fixed_order():
    student, teacher = torch.randn(6, 4), torch.randn(6, 4)
    fs, ft = torch.randn(6, 3), torch.randn(6, 3)
    objective = StudentObjective(
        kd_weight=2.0, kd_temperature=3.0, logit_l2_weight=0.5, logit_l1_weight=0.25, hint_weight=4.0,
        attention_weight=10.0, label_weight=1.5,
    )  # fmt: skip
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    terms = objective.terms(
        student, teacher, student_features=fs, teacher_features=ft, attention=[torch.tensor(0.1)], labels=labels
    )
    assert list(terms) == ["kd", "logit_l2", "logit_l1", "hint", "attention", "label"]
    torch.testing.assert_close(terms["kd"], 2.0 * AF.kd_loss(student, teacher, 3.0))
    torch.testing.assert_close(terms["logit_l2"], 0.5 * ((student - teacher) ** 2).mean())
    torch.testing.assert_close(terms["logit_l1"], 0.25 * (student - teacher).abs().mean())
    torch.testing.assert_close(terms["hint"], 4.0 * ((fs - ft) ** 2).mean())
    torch.testing.assert_close(terms["attention"], torch.tensor(1.0))
    torch.testing.assert_close(terms["label"], 1.5 * nn.functional.cross_entropy(student, labels))
    with pytest.raises(ValueError, match="has no labels"):
        objective.terms(student, teacher, student_features=fs, teacher_features=ft, attention=[torch.tensor(0.1)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kd_weight": -1.0}, "kd_weight"), ({"kd_temperature": 0.0}, "kd_temperature"), ({"label_smoothing": 1.0}, "")],
)
def test_bad_objective_options_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StudentObjective(**kwargs)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"data_term": "l2", "data_weight": 2.0}, {"kd_weight": 0.0, "logit_l2_weight": 2.0}),
        ({"data_term": "l1"}, {"kd_weight": 0.0, "logit_l1_weight": 1.0}),
        ({"data_term": "none", "adversarial_weight": 1.0}, {"kd_weight": 0.0, "adversarial_weight": 1.0}),
        ({"data_weight": 0.5}, {"kd_weight": 0.5}),
        ({"feature_weight": 0.3}, {"hint_weight": 0.3}),
    ],
)
def test_adversarial_old_argument_names_warn_and_mean_the_same(old, new):
    with pytest.warns(DeprecationWarning, match="kd_weight|hint_weight"):
        deprecated = AdversarialDistillation(*networks(), **old)
    assert deprecated.objective == AdversarialDistillation(*networks(), **new).objective
    assert not {"data_term", "data_weight", "feature_weight"} & set(deprecated.hparams)


def test_distillation_old_argument_names_warn_and_mean_the_same():
    calls: list[str] = []

    def optimizer(params):
        calls.append("optimizer")
        return torch.optim.SGD(params, lr=0.01)

    with pytest.warns(DeprecationWarning) as record:
        module = KnowledgeDistillation(*networks(), temperature=2.0, optimizer=optimizer, scheduler=None)
    assert any("kd_temperature" in str(w.message) for w in record)
    assert any("student_optimizer" in str(w.message) for w in record)
    assert module.objective.kd_temperature == 2.0 and module.hparams.kd_temperature == 2.0
    module.configure_optimizers()
    assert calls == ["optimizer"]


def test_every_module_logs_the_same_metric_names():
    teacher, student = networks()
    names = {}
    for label, module in {
        "adversarial": AdversarialDistillation(teacher, student),
        "distillation": KnowledgeDistillation(*networks()),
        "supervised": SupervisedClassifier.from_pair(TinyTeacher(), StudentWithoutDropout(), num_classes=4),
    }.items():
        trainer = fit(module, make_loader(), make_loader())
        names[label] = {k for k in trainer.callback_metrics if (k.startswith("val/") and "acc" in k) or "agree" in k}
    shared = {"val/student_acc", "val/teacher_acc", "val/agreement"}
    assert all(shared <= logged for logged in names.values()), names
    assert {"val/d_acc_real", "val/d_acc_fake"} <= names["adversarial"]
