"""The adversarial-distillation LightningModule: alternating student and discriminator updates (ANC)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Literal, cast

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from lightning_advkd import functional as AF
from lightning_advkd.critic_input import CriticInput, DiscriminatorInput
from lightning_advkd.critic_layers import CriticLayers
from lightning_advkd.discriminator import judge
from lightning_advkd.features import make_adapter
from lightning_advkd.functional import GAN_LOSSES, DataTerm, GanLoss
from lightning_advkd.objective import StudentObjective, renamed, weights_from_data_term
from lightning_advkd.optim import (
    OptimizerFactory,
    SchedulerFactory,
    default_discriminator_optimizer,
    default_student_optimizer,
)
from lightning_advkd.outputs import OutputSpec
from lightning_advkd.regularizer import DiscriminatorRegularizer
from lightning_advkd.two_player import (
    DiscriminatorFactory,
    NonFiniteLossError,
    StudentOutputs,
    TeacherOutputs,
    TwoPlayerModule,
    build_discriminator,
    check_ddp_finds_unused_parameters,
    check_loop_options,
)


class AdversarialDistillation(TwoPlayerModule):
    """Adversarial Network Compression (Belagiannis et al., ECCV-W 2018) for any teacher and student.

    A frozen teacher and a student see the same unlabelled batch. A discriminator learns to tell the teacher's
    pooled penultimate features from the student's; the student learns to fool it and to match the teacher's
    logits. Per batch (defaults): one student update, then one discriminator update. Training never reads labels;
    labels in validation batches only feed the accuracy metrics.

    Student loss: ``adversarial_weight * BCE(D(A(dropout(f_S))), 1)`` plus the terms of the package's one student
    objective (:class:`~lightning_advkd.objective.StudentObjective`: ``kd_weight * KD(z_S, z_T)`` by default,
    ``logit_l2_weight``, ``logit_l1_weight``, and ``hint_weight * MSE(A(f_S), f_T)`` on the adapted feature).
    Discriminator loss: ``BCE(D(f_T), 1) + BCE(D(A(f_S)), 0)`` plus the terms of every
    :class:`~lightning_advkd.callbacks.DiscriminatorRegularizer` attached to the Trainer (none: the unregularized
    baseline; :class:`~lightning_advkd.callbacks.AdversarialSamples` is the paper's). ``A`` is a learned linear
    adapter, present when the feature widths differ; it trains with the student.

    The defaults with an :class:`~lightning_advkd.callbacks.R1Penalty` attached are the package's recipe (measured
    in ``benchmarks/results/fmnist``); ``adversarial_weight=1, data_term="l2"`` with
    :class:`~lightning_advkd.callbacks.AdversarialSamples` is the reference implementation's.

    Logits and features are read from networks returning a tensor, a tuple, a dict or a ``ModelOutput`` by the rule
    of :mod:`lightning_advkd.outputs`; ``teacher_output`` / ``student_output`` name the logits when it is ambiguous.

    Args:
        teacher: the frozen teacher; kept in eval mode, run without autograd, never given to an optimizer.
        student: the network to train.
        discriminator: the discriminator, or a factory ``in_features -> nn.Module`` completed with
            :attr:`discriminator_width` (e.g. ``functools.partial(MLPDiscriminator, spectral_norm=True)``); default
            :class:`MLPDiscriminator`. A module must accept inputs of :attr:`discriminator_width` features.
        teacher_tap: where the teacher's feature is read (see :mod:`lightning_advkd.features`); default: the input
            of its last ``nn.Linear``.
        student_tap: the same for the student.
        input_shape: shape of one input, e.g. ``(3, 32, 32)``. When given, both networks are run once at
            construction to find feature widths and class counts and to check the taps; needed only when a tap's
            width cannot be read off an ``nn.Linear``.
        num_classes: class count for the metrics; default: read off the teacher.
        teacher_output: where the teacher's logits are in its output: a key, an index or a callable.
        student_output: the same for the student.
        adversarial_weight: ``w_adv``; 0 leaves only the objective's terms (KD, or "L2 on logits" with
            ``kd_weight=0, logit_l2_weight=1``). Default 0.1, not the reference implementation's 1: on the
            Fashion-MNIST reproduction (``benchmarks/results/fmnist``) weight 1 left the label-free student below the
            one trained with labels.
        kd_weight: weight of Hinton KD at ``kd_temperature`` (default 1). On the Fashion-MNIST reproduction KD beat
            the reference implementation's L2 on logits by about 0.2 points.
        kd_temperature: temperature of the KD term (and of ``discriminator_input="logits"``).
        logit_l2_weight: weight of the mean squared error between logits (the reference implementation's term).
        logit_l1_weight: weight of the mean absolute error between logits.
        hint_weight: weight of a FitNets-style hint, ``MSE(A(f_S), f_T)``, on the adapted student feature the
            discriminator judges (beyond the paper; 0 turns it off).
        data_term: deprecated, with ``data_weight``: ``data_term="kl"|"l2"|"l1"`` is ``kd_weight`` |
            ``logit_l2_weight`` | ``logit_l1_weight`` ``= data_weight``.
        data_weight: deprecated; see ``data_term``.
        feature_weight: deprecated name of ``hint_weight``.
        adversarial_dropout: drop probability ``p`` of the adversarial samples.
        adapter_activation: ``"relu"`` ends the adapter with a ReLU so adapted student features live in the
            non-negative range of a pooled post-ReLU teacher feature (with ``"none"``, the default, their sign alone
            lets the discriminator tell them apart); see :func:`~lightning_advkd.features.make_adapter`.
        discriminator_input: what the discriminator judges: ``"features"`` (the paper's: the teacher's pooled
            feature against the adapted student feature) or ``"logits"`` (the class probabilities softened at
            ``kd_temperature``, the input of MEAL-V2's discriminator, here trained in a true min-max). With
            ``"logits"`` the adversarial samples are the clean student outputs (dropout needs a feature).
        conditional_discriminator: show the discriminator the teacher's soft prediction for the same sample next to
            what it judges (``functional.conditioned``), so only per-sample agreement fools it. Label-free.
        discriminator_layers: ``(student layer, teacher layer)`` pairs whose attention maps the discriminator judges
            too, with adversarial samples per layer (:mod:`lightning_advkd.critic_layers`); needs ``input_shape``.
        gan_loss: ``"bce"`` (non-saturating, the paper's), ``"hinge"`` or ``"relativistic"`` (relativistic
            average); see :func:`lightning_advkd.functional.discriminator_loss`.
        perturb_adversarial_term: the student's adversarial term uses the perturbed (default) or the clean feature.
        student_steps: student updates per batch (each with its own forward pass).
        discriminator_steps: discriminator updates per batch (on the batch's last student features).
        discriminator_first: update the discriminator before the student in each batch.
        student_optimizer: factory ``params -> Optimizer`` for student and adapter; default
            :func:`default_student_optimizer`.
        discriminator_optimizer: factory for the discriminator; default :func:`default_discriminator_optimizer`.
        student_scheduler: factory ``optimizer -> LRScheduler`` or ``None``.
        discriminator_scheduler: the same for the discriminator.
        scheduler_interval: step the schedulers after every optimizer ``"step"`` or every ``"epoch"``. A step that
            mixed precision skips (non-finite gradients) does not step its scheduler.
        student_grad_clip: clip the student's (and adapter's) gradients to this value, or ``None``.
        discriminator_grad_clip: the same for the discriminator.
        grad_clip_algorithm: ``"norm"`` or ``"value"``.
        accumulate_grad_batches: accumulate gradients over this many batches before each optimizer step (the
            Trainer's own option is unavailable with manual optimization).
        max_student_steps: stop training after this many student optimizer steps. Note that the Trainer's
            ``max_steps`` counts *every* optimizer step, student and discriminator alike.
        input_key: key of the input in dict batches.
        label_key: key of the labels in dict batches (validation and test only).
        include_teacher_in_checkpoint: keep the teacher's weights in checkpoints (left out by default; a fingerprint
            is stored instead and checked when loading).
        check_finite: stop with :class:`NonFiniteLossError` naming the term and step when a loss is NaN or infinite.
        restore_rng_state: store the random-number generators' state in checkpoints and restore it on resume, so a
            resumed run continues exactly like an uninterrupted one.

    Raises:
        ValueError: on a missing network, bad taps (with the closest layer names), logits of different class counts
            while a logit term is on, or inconsistent options.

    Example:
        >>> from torch import nn
        >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> student = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
        >>> module = AdversarialDistillation(teacher, student)
        >>> module.feature_widths, module.num_classes
        ((32, 6), 4)
    """

    def __init__(
        self,
        teacher: nn.Module | None = None,
        student: nn.Module | None = None,
        discriminator: nn.Module | DiscriminatorFactory | None = None,
        *,
        teacher_tap: str | None = None,
        student_tap: str | None = None,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        teacher_output: OutputSpec = None,
        student_output: OutputSpec = None,
        adversarial_weight: float = 0.1,
        kd_weight: float = 1.0,
        kd_temperature: float = 4.0,
        logit_l2_weight: float = 0.0,
        logit_l1_weight: float = 0.0,
        hint_weight: float = 0.0,
        adversarial_dropout: float = 0.5,
        adapter_activation: Literal["none", "relu"] = "none",
        discriminator_input: DiscriminatorInput = "features",
        conditional_discriminator: bool = False,
        discriminator_layers: Sequence[Sequence[str]] | None = None,
        gan_loss: GanLoss = "bce",
        perturb_adversarial_term: bool = True,
        student_steps: int = 1,
        discriminator_steps: int = 1,
        discriminator_first: bool = False,
        student_optimizer: OptimizerFactory | None = None,
        discriminator_optimizer: OptimizerFactory | None = None,
        student_scheduler: SchedulerFactory | None = None,
        discriminator_scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        student_grad_clip: float | None = None,
        discriminator_grad_clip: float | None = None,
        grad_clip_algorithm: Literal["norm", "value"] = "norm",
        accumulate_grad_batches: int = 1,
        max_student_steps: int | None = None,
        input_key: str = "image",
        label_key: str = "label",
        include_teacher_in_checkpoint: bool = False,
        check_finite: bool = True,
        restore_rng_state: bool = True,
        data_term: DataTerm | None = None,
        data_weight: float | None = None,
        feature_weight: float | None = None,
    ) -> None:
        if data_term is not None or data_weight is not None:
            new = "kd_weight / logit_l2_weight / logit_l1_weight"
            kind = renamed("data_term and data_weight", new, data_term or "kl", "AdversarialDistillation")
            logit_weights = weights_from_data_term(kind, 1.0 if data_weight is None else data_weight)
            kd_weight, logit_l2_weight, logit_l1_weight = logit_weights.values()
        if feature_weight is not None:
            hint_weight = renamed("feature_weight", "hint_weight", feature_weight, "AdversarialDistillation")
        self.objective = StudentObjective(
            kd_weight=kd_weight, kd_temperature=kd_temperature, logit_l2_weight=logit_l2_weight,
            logit_l1_weight=logit_l1_weight, hint_weight=hint_weight,
        )  # fmt: skip
        _check_options(adversarial_weight, self.objective, adversarial_dropout, gan_loss)
        check_loop_options(
            student_steps, discriminator_steps, scheduler_interval, grad_clip_algorithm, accumulate_grad_batches,
            max_student_steps,
        )  # fmt: skip
        super().__init__(
            teacher, student, teacher_tap=teacher_tap, student_tap=student_tap, input_shape=input_shape,
            num_classes=num_classes, teacher_output=teacher_output, student_output=student_output,
            logit_term_on=self.objective.compares_logits, input_key=input_key, label_key=label_key,
            include_teacher_in_checkpoint=include_teacher_in_checkpoint, restore_rng_state=restore_rng_state,
            discriminator_metrics=True,
        )  # fmt: skip
        self.save_hyperparameters(
            ignore=[
                "teacher", "student", "discriminator", "student_optimizer", "discriminator_optimizer",
                "student_scheduler", "discriminator_scheduler", "teacher_output", "student_output", "data_term",
                "data_weight", "feature_weight",
            ]
        )  # fmt: skip
        teacher_width, student_width = self.feature_widths
        self.adapter = make_adapter(student_width, teacher_width, adapter_activation)
        pairs = discriminator_layers or []
        self.critic_layers = CriticLayers(self.teacher, self.student, pairs, input_shape) if pairs else None
        self.critic_input = CriticInput(
            discriminator_input, conditional_discriminator, kd_temperature, teacher_width, self.num_classes,
            self.critic_layers,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):  # the discriminator's size never shifts the student's random stream
            self.discriminator = build_discriminator(discriminator, self.discriminator_width)
        optimizers = (student_optimizer or default_student_optimizer, discriminator_optimizer)
        self._init_two_player(optimizers, (student_scheduler, discriminator_scheduler))
        self._regularizers: list[DiscriminatorRegularizer] = []
        self.discriminator_accuracy: Tensor | None = None  # of the last update, for the regularizers and guards

    @property
    def discriminator_width(self) -> int:
        """Width of the vectors the discriminator judges (``discriminator_input``, the layers, the conditioning)."""
        return self.critic_input.width

    # ------------------------------------------------------------------ forward passes

    @torch.no_grad()
    def features(self, batch: Any) -> tuple[Tensor, Tensor]:
        """The teacher's and the student's vectors the discriminator judges for a batch, without autograd.

        Args:
            batch: a batch as the module's loaders give it (a tensor, a tuple or a dict, cached or not).

        Returns:
            ``(teacher, student)``: with ``discriminator_input="features"`` the teacher's pooled feature and the
            adapted student feature, ``(N, C_T)`` each (without the conditioning and the layers' attention maps).
        """
        inputs, _ = self._split(batch)
        teacher_features, teacher_logits = self._teacher_outputs(batch, inputs)
        student = self._student_forward(inputs)
        judged = self.critic_input.judged
        return judged(teacher_features, teacher_logits), judged(student.adapted, student.logits)

    def _student_forward(self, inputs: Tensor) -> StudentOutputs:
        dropout, layers = self.hparams["adversarial_dropout"], self.critic_layers
        with layers.capture(student=True) if layers is not None else nullcontext():
            features, logits = self._student_forward_raw(inputs)
        perturbed = AF.adversarial_sample(features, dropout, training=self.training)
        outputs = StudentOutputs(features, logits, self.adapter(features), self.adapter(perturbed))
        if layers is not None:
            outputs.layers, outputs.perturbed_layers = layers.student_vectors(dropout, self.training)
        return outputs

    def _teacher_side(self, batch: Any, inputs: Tensor) -> TeacherOutputs:
        """The teacher's feature, logits and (with ``discriminator_layers``) attention vectors, cached or computed."""
        layers = self.critic_layers
        with layers.capture(student=False, teacher=True) if layers is not None else nullcontext():
            features, logits = self._teacher_outputs(batch, inputs)
        return TeacherOutputs(features, logits, layers.teacher_vectors(batch) if layers is not None else None)

    # ------------------------------------------------------------------ training

    @override
    def on_fit_start(self) -> None:
        super().on_fit_start()
        check_ddp_finds_unused_parameters(self.trainer.strategy.model)
        callbacks = self.trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's callback connector
        self._regularizers = [cb for cb in callbacks if isinstance(cb, DiscriminatorRegularizer)]
        if self.hparams["gan_loss"] == "hinge" and any(r.real_target() != 1.0 for r in self._regularizers):
            raise ValueError(
                "LabelSmoothing changes the teacher label, which the hinge loss does not have: use gan_loss='bce' "
                "or 'relativistic' with it, or remove the LabelSmoothing callback"
            )
        if not self._regularizers:
            rank_zero_info(
                "lightning_advkd: no discriminator regularizer attached: training the unregularized baseline"
            )

    @override
    def training_step(self, batch: Any, batch_idx: int) -> None:
        inputs, _ = self._split(batch)  # labels are never read
        self._batch_idx = batch_idx
        teacher = self._teacher_side(batch, inputs)
        student = self._student_forward(inputs)
        if self.hparams["discriminator_first"]:
            self._discriminator_updates(teacher, student)
        for repeat in range(self.hparams["student_steps"]):
            if repeat > 0:
                student = self._student_forward(inputs)
            self._student_update(student, teacher)
        if not self.hparams["discriminator_first"]:
            self._discriminator_updates(teacher, student)
        max_steps = self.hparams["max_student_steps"]
        if max_steps is not None and self.student_step >= max_steps:
            self.trainer.should_stop = True

    def _student_update(self, student: StudentOutputs, teacher: TeacherOutputs) -> None:
        optimizer = cast("list[LightningOptimizer]", self.optimizers())[0]  # two optimizers: always a list
        with self.toggled_optimizer(optimizer):
            terms = self._student_loss_terms(student, teacher)
            loss = self._total(terms, "student")
            self.manual_backward(loss / self.hparams["accumulate_grad_batches"])
            if self._is_update_batch():
                stepped = self._optimizer_step(optimizer, 0)
                self.student_step += int(stepped)
        if self._should_log():
            self._log_terms("student", terms, loss)

    def _student_loss_terms(self, student: StudentOutputs, teacher: TeacherOutputs) -> dict[str, Tensor]:
        hp = self.hparams
        terms: dict[str, Tensor] = {}  # the adversarial term first: the summation order of existing recipes
        if hp["adversarial_weight"] > 0:
            perturb = hp["perturb_adversarial_term"]
            features, layers = (
                (student.perturbed, student.perturbed_layers) if perturb else (student.adapted, student.layers)
            )
            fake_logits = self.discriminator(self.critic_input(features, student.logits, teacher.logits, layers))
            real_logits = None
            if hp["gan_loss"] == "relativistic":
                with torch.no_grad():
                    real_logits = self.discriminator(self._critic_input_of_teacher(teacher))
            adversarial = AF.generator_loss(fake_logits, real_logits, hp["gan_loss"])
            terms["adversarial"] = hp["adversarial_weight"] * adversarial
        terms.update(
            self.objective.terms(
                student.logits, teacher.logits, student_features=student.adapted, teacher_features=teacher.features
            )
        )
        return terms

    # ------------------------------------------------------------------ evaluation

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    def _evaluation_step(self, batch: Any, batch_idx: int, stage: str) -> None:
        inputs, labels = self._split_for_evaluation(batch, batch_idx, stage)
        metrics, prefix = (self.val_metrics if stage == "val" else self.test_metrics), f"{stage}/"
        teacher = self._teacher_side(batch, inputs)
        student = self._student_forward(inputs)
        real = self._critic_input_of_teacher(teacher)
        fake = self.critic_input(student.adapted, student.logits, teacher.logits, student.layers)
        real_logits, fake_logits = (logits.squeeze(1) for logits in judge(self.discriminator, real, fake))
        metrics.update(student.logits, teacher.logits, labels=labels, real_logits=real_logits, fake_logits=fake_logits)
        self._log_metrics(metrics, labelled=labels is not None)
        terms = self._student_loss_terms(student, teacher)
        self.log_dict({f"{prefix}loss/student_{k}": v for k, v in terms.items()}, on_step=False, on_epoch=True)
        self.log(f"{prefix}d_gap", torch.sigmoid(real_logits).mean() - torch.sigmoid(fake_logits).mean())


def _check_options(
    adversarial_weight: float,
    objective: StudentObjective,
    adversarial_dropout: float,
    gan_loss: str,
) -> None:
    problems = [
        (adversarial_weight < 0, f"adversarial_weight must be >= 0 (0 switches it off), got {adversarial_weight}"),
        (adversarial_weight == 0 and not objective.weights,
         "the student loss is empty: adversarial_weight and every weight of the objective are 0"),
        (not 0.0 <= adversarial_dropout < 1.0, f"adversarial_dropout must be in [0, 1), got {adversarial_dropout}"),
        (gan_loss not in GAN_LOSSES, f"gan_loss must be one of {GAN_LOSSES}, got {gan_loss!r}"),
    ]  # fmt: skip
    for failed, message in problems:
        if failed:
            raise ValueError(message)


__all__ = [
    "AdversarialDistillation",
    "NonFiniteLossError",
    "default_discriminator_optimizer",
    "default_student_optimizer",
]
