"""The adversarial-distillation LightningModule: alternating student and discriminator updates (ANC)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import BinaryAccuracy
from typing_extensions import override

from lightning_advkd import functional as AF
from lightning_advkd._logging import is_logging_step
from lightning_advkd.discriminator import MLPDiscriminator
from lightning_advkd.features import make_adapter
from lightning_advkd.functional import GAN_LOSSES, DataTerm, GanLoss
from lightning_advkd.regularizer import DiscriminatorRegularizer, DiscriminatorStepInputs
from lightning_advkd.teacher_student import TeacherStudentModule

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
DiscriminatorFactory = Callable[[int], nn.Module]
DiscriminatorInput = Literal["features", "logits"]
SchedulerFactory = Callable[[Optimizer], LRScheduler]


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite during training."""


@dataclass
class StudentOutputs:
    """One student forward pass: pooled feature, logits, and the adapted clean and perturbed features."""

    features: Tensor
    logits: Tensor
    adapted: Tensor
    perturbed: Tensor


def default_student_optimizer(params: Iterable[nn.Parameter]) -> Optimizer:
    """SGD, lr 0.05, momentum 0.9, weight decay 5e-4: the community recipe for students trained from scratch."""
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def default_discriminator_optimizer(params: Iterable[nn.Parameter]) -> Optimizer:
    """Adam, lr 2e-4, betas (0.5, 0.999): the usual GAN discriminator setting."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


class AdversarialDistillation(TeacherStudentModule):
    """Adversarial Network Compression (Belagiannis et al., ECCV-W 2018) for any teacher and student.

    A frozen teacher and a student see the same unlabelled batch. A discriminator learns to tell the teacher's
    pooled penultimate features from the student's; the student learns to fool it and to match the teacher's
    logits. Per batch (defaults): one student update, then one discriminator update. Training never reads labels;
    labels in validation batches only feed the accuracy metrics.

    Student loss: ``adversarial_weight * BCE(D(A(dropout(f_S))), 1) + data_weight * data_term(z_S, z_T)``
    (``+ feature_weight * MSE(A(f_S), f_T)`` when that hint is switched on).
    Discriminator loss: ``BCE(D(f_T), 1) + BCE(D(A(f_S)), 0)`` plus the terms of every
    :class:`~lightning_advkd.callbacks.DiscriminatorRegularizer` attached to the Trainer (none: the unregularized
    baseline; :class:`~lightning_advkd.callbacks.AdversarialSamples` is the paper's). ``A`` is a learned linear
    adapter, present when the feature widths differ; it trains with the student.

    The defaults with an :class:`~lightning_advkd.callbacks.R1Penalty` attached are the package's recipe (measured
    in ``benchmarks/results/fmnist``); ``adversarial_weight=1, data_term="l2"`` with
    :class:`~lightning_advkd.callbacks.AdversarialSamples` is the reference implementation's.

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
        adversarial_weight: ``w_adv``; 0 leaves only the data term (KD, or "L2 on logits" with ``data_term="l2"``).
            Default 0.1, not the reference implementation's 1: on the Fashion-MNIST reproduction
            (``benchmarks/results/fmnist``) weight 1 left the label-free student below the one trained with labels.
        data_weight: ``w_data``.
        data_term: ``"kl"`` (Hinton KD at ``kd_temperature``; default), ``"l2"`` (the reference implementation's),
            ``"l1"`` or ``"none"``. On the Fashion-MNIST reproduction KL beat L2 by about 0.2 points, as KD beats L2
            on logits there.
        kd_temperature: temperature of the ``"kl"`` data term.
        feature_weight: weight of a FitNets-style hint, ``MSE(A(f_S), f_T)``, on the adapted student feature the
            discriminator judges (beyond the paper; 0 turns it off).
        adversarial_dropout: drop probability ``p`` of the adversarial samples.
        discriminator_input: what the discriminator judges: ``"features"`` (the paper's: the teacher's pooled
            feature against the adapted student feature) or ``"logits"`` (the class probabilities softened at
            ``kd_temperature``, the input of MEAL-V2's discriminator, here trained in a true min-max). With
            ``"logits"`` the adversarial samples are the clean student outputs (dropout needs a feature).
        conditional_discriminator: show the discriminator the teacher's soft prediction for the same sample next to
            what it judges (``functional.conditioned``), so only per-sample agreement fools it. Label-free.
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
        adversarial_weight: float = 0.1,
        data_weight: float = 1.0,
        data_term: DataTerm = "kl",
        feature_weight: float = 0.0,
        kd_temperature: float = 4.0,
        adversarial_dropout: float = 0.5,
        discriminator_input: DiscriminatorInput = "features",
        conditional_discriminator: bool = False,
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
    ) -> None:
        _check_options(
            {"adversarial_weight": adversarial_weight, "data_weight": data_weight, "feature_weight": feature_weight},
            data_term, adversarial_dropout, student_steps, discriminator_steps, scheduler_interval,
            grad_clip_algorithm, accumulate_grad_batches, max_student_steps, discriminator_input, gan_loss,
        )  # fmt: skip
        super().__init__(
            teacher, student, teacher_tap=teacher_tap, student_tap=student_tap, input_shape=input_shape,
            num_classes=num_classes, logit_term_on=data_term != "none" and data_weight > 0, input_key=input_key,
            label_key=label_key, include_teacher_in_checkpoint=include_teacher_in_checkpoint,
            restore_rng_state=restore_rng_state,
        )  # fmt: skip
        self.save_hyperparameters(
            ignore=[
                "teacher", "student", "discriminator", "student_optimizer", "discriminator_optimizer",
                "student_scheduler", "discriminator_scheduler",
            ]
        )  # fmt: skip
        self.automatic_optimization = False
        teacher_width, student_width = self.feature_widths
        self.adapter = make_adapter(student_width, teacher_width)
        with torch.random.fork_rng(devices=[]):  # the discriminator's size never shifts the student's random stream
            self.discriminator = _build_discriminator(discriminator, self.discriminator_width)
        self._optimizer_factories = (
            student_optimizer or default_student_optimizer,
            discriminator_optimizer or default_discriminator_optimizer,
        )
        self._scheduler_factories = (student_scheduler, discriminator_scheduler)
        self._schedulers: list[LRScheduler | None] = [None, None]
        self.student_step = 0
        self.discriminator_step = 0
        self._regularizers: list[DiscriminatorRegularizer] = []
        self._batch_idx = 0
        self.batches_trained = 0  # over the whole fit, checkpointed: when per-step metrics are written
        self.discriminator_accuracy: Tensor | None = None  # of the last update, for the regularizers and guards
        self.val_metrics = self._make_metrics("val/", _discriminator_metrics())
        self.test_metrics = self._make_metrics("test/", _discriminator_metrics())

    @property
    def discriminator_width(self) -> int:
        """Width of the vectors the discriminator judges (set by ``discriminator_input`` and the conditioning)."""
        width = self.feature_widths[0] if self.hparams.discriminator_input == "features" else self.num_classes
        return width + (self.num_classes if self.hparams.conditional_discriminator else 0)

    # ------------------------------------------------------------------ forward passes

    def _critic_input(self, features: Tensor, logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """What the discriminator judges of one network's outputs (see ``discriminator_input``)."""
        hp = self.hparams
        judged = features if hp.discriminator_input == "features" else F.softmax(logits / hp.kd_temperature, dim=1)
        return AF.conditioned(judged, teacher_logits, hp.kd_temperature) if hp.conditional_discriminator else judged

    @torch.no_grad()
    def features(self, batch: Any) -> tuple[Tensor, Tensor]:
        """The teacher's and the student's vectors the discriminator judges for a batch, without autograd.

        Args:
            batch: a batch as the module's loaders give it (a tensor, a tuple or a dict, cached or not).

        Returns:
            ``(teacher, student)``: with ``discriminator_input="features"`` the teacher's pooled feature and the
            adapted student feature, ``(N, C_T)`` each (without the conditioning).
        """
        inputs, _ = self._split(batch)
        teacher_features, teacher_logits = self._teacher_outputs(batch, inputs)
        student = self._student_forward(inputs)
        if self.hparams.discriminator_input == "features":
            return teacher_features, student.adapted
        temperature = self.hparams.kd_temperature
        return F.softmax(teacher_logits / temperature, dim=1), F.softmax(student.logits / temperature, dim=1)

    def _student_forward(self, inputs: Tensor) -> StudentOutputs:
        features, logits = self._student_forward_raw(inputs)
        perturbed = AF.adversarial_sample(features, self.hparams.adversarial_dropout, training=self.training)
        return StudentOutputs(features, logits, self.adapter(features), self.adapter(perturbed))

    # ------------------------------------------------------------------ training

    @override
    def on_fit_start(self) -> None:
        super().on_fit_start()
        _check_ddp_finds_unused_parameters(self.trainer.strategy.model)
        self._regularizers = [cb for cb in self.trainer.callbacks if isinstance(cb, DiscriminatorRegularizer)]
        if self.hparams.gan_loss == "hinge" and any(r.real_target() != 1.0 for r in self._regularizers):
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
        teacher_features, teacher_logits = self._teacher_outputs(batch, inputs)
        student = self._student_forward(inputs)
        if self.hparams.discriminator_first:
            self._discriminator_updates(teacher_features, teacher_logits, student)
        for repeat in range(self.hparams.student_steps):
            if repeat > 0:
                student = self._student_forward(inputs)
            self._student_update(student, teacher_features, teacher_logits)
        if not self.hparams.discriminator_first:
            self._discriminator_updates(teacher_features, teacher_logits, student)
        max_steps = self.hparams.max_student_steps
        if max_steps is not None and self.student_step >= max_steps:
            self.trainer.should_stop = True

    def _student_update(self, student: StudentOutputs, teacher_features: Tensor, teacher_logits: Tensor) -> None:
        optimizer = self.optimizers()[0]
        with self.toggled_optimizer(optimizer):
            terms = self._student_loss_terms(student, teacher_features, teacher_logits)
            loss = self._total(terms, "student")
            self.manual_backward(loss / self.hparams.accumulate_grad_batches)
            if self._is_update_batch():
                stepped = self._optimizer_step(optimizer, 0)
                self.student_step += int(stepped)
        if self._should_log():
            self._log_terms("student", terms, loss)

    def _student_loss_terms(
        self, student: StudentOutputs, teacher_features: Tensor, teacher_logits: Tensor
    ) -> dict[str, Tensor]:
        hp = self.hparams
        terms: dict[str, Tensor] = {}
        if hp.adversarial_weight > 0:
            features = student.perturbed if hp.perturb_adversarial_term else student.adapted
            fake_logits = self.discriminator(self._critic_input(features, student.logits, teacher_logits))
            real_logits = None
            if hp.gan_loss == "relativistic":
                with torch.no_grad():
                    real_logits = self.discriminator(
                        self._critic_input(teacher_features, teacher_logits, teacher_logits)
                    )
            adversarial = AF.generator_loss(fake_logits, real_logits, hp.gan_loss)
            terms["adversarial"] = hp.adversarial_weight * adversarial
        if hp.data_weight > 0 and hp.data_term != "none":
            data = AF.logit_matching_loss(student.logits, teacher_logits, hp.data_term, hp.kd_temperature)
            terms["data"] = hp.data_weight * data
        if hp.feature_weight > 0:
            terms["feature"] = hp.feature_weight * AF.hint_loss(student.adapted, teacher_features)
        if not terms:
            raise ValueError("the student loss is empty: adversarial_weight, data_weight and feature_weight are all 0")
        return terms

    def _discriminator_updates(self, teacher_features: Tensor, teacher_logits: Tensor, student: StudentOutputs) -> None:
        real = self._critic_input(teacher_features, teacher_logits, teacher_logits)
        fake = self._critic_input(student.adapted.detach(), student.logits.detach(), teacher_logits)
        perturbed = fake
        if self.hparams.discriminator_input == "features":
            perturbed = self._critic_input(student.perturbed.detach(), student.logits.detach(), teacher_logits)
        for regularizer in self._regularizers:
            real, fake = regularizer.transform_inputs(real, fake)
        if any(r.requires_real_grad for r in self._regularizers):
            real = real.detach().requires_grad_(True)
        optimizer = self.optimizers()[1]
        for _ in range(self.hparams.discriminator_steps):
            with self.toggled_optimizer(optimizer):
                inputs = DiscriminatorStepInputs(
                    self.discriminator, real, fake, perturbed,
                    self.discriminator(real), self.discriminator(fake),
                )  # fmt: skip
                terms = self._discriminator_loss_terms(inputs)
                loss = self._total(terms, "discriminator")
                self.manual_backward(loss / self.hparams.accumulate_grad_batches)
                if self._is_update_batch():
                    self.discriminator_step += int(self._optimizer_step(optimizer, 1))
            self.discriminator_accuracy = _discriminator_accuracy(inputs.real_logits, inputs.fake_logits)
            for regularizer in self._regularizers:
                regularizer.on_discriminator_step(self.trainer, self.discriminator_step, self.discriminator_accuracy)
        if self._should_log():
            self._log_terms("discriminator", terms, loss)
            self._log_discriminator_health(inputs.real_logits.detach(), inputs.fake_logits.detach(), "train/")

    def _discriminator_loss_terms(self, inputs: DiscriminatorStepInputs) -> dict[str, Tensor]:
        real_target = min((r.real_target() for r in self._regularizers), default=1.0)
        terms = {
            "gan": AF.discriminator_loss(inputs.real_logits, inputs.fake_logits, real_target, self.hparams.gan_loss)
        }
        for regularizer in self._regularizers:
            penalty = regularizer.penalty(inputs)
            if penalty is not None:
                terms[f"reg_{regularizer.name}"] = penalty
        return terms

    def _total(self, terms: dict[str, Tensor], network: str) -> Tensor:
        total = torch.stack(list(terms.values())).sum()
        if self.hparams.check_finite and not bool(torch.isfinite(total)):
            bad = [name for name, value in terms.items() if not bool(torch.isfinite(value))]
            steps = self.student_step if network == "student" else self.discriminator_step
            raise NonFiniteLossError(
                f"non-finite {network} loss at {network} step {steps} (global step {self.global_step}): term(s) "
                f"{bad} = {[float(terms[n].detach()) for n in bad]}. Training stopped; the last saved checkpoint "
                "is intact. "
                "Lower the learning rate, enable gradient clipping, or check the inputs for NaN."
            )
        return total

    def _is_update_batch(self) -> bool:
        """With hand-made gradient accumulation: does this batch end an accumulation window?"""
        accumulate = self.hparams.accumulate_grad_batches
        if accumulate == 1:
            return True
        return (self._batch_idx + 1) % accumulate == 0 or self.trainer.is_last_batch

    def _optimizer_step(self, optimizer: Any, index: int) -> bool:
        """Step, zero the gradients and (per-step interval) step the scheduler; ``False`` if AMP skipped the step."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        scale_before = scaler.get_scale() if scaler is not None else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        skipped = scaler is not None and scaler.get_scale() < scale_before
        if not skipped and self.hparams.scheduler_interval == "step" and self._schedulers[index] is not None:
            self._schedulers[index].step()
        return not skipped

    @override
    def on_train_epoch_end(self) -> None:
        if self.hparams.scheduler_interval == "epoch":
            for scheduler in self._schedulers:
                if scheduler is not None:
                    scheduler.step()

    @override
    def on_validation_epoch_start(self) -> None:
        self._broadcast_trained_buffers()

    @override
    def on_train_end(self) -> None:
        self._broadcast_trained_buffers()

    def _broadcast_trained_buffers(self) -> None:
        """Give every process rank 0's BatchNorm statistics before evaluating or finishing.

        DDP broadcasts buffers only at the start of a training forward pass, so after the last training step each
        rank holds its own statistics: evaluation would then use different models and the replicas would end apart.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for network in (self.student, self.adapter, self.discriminator):
            for buffer in network.buffers():
                torch.distributed.broadcast(buffer, src=0)

    @override
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Called after AMP unscaling, so clipping and norms see true gradients.
        index = 0 if optimizer is self.trainer.optimizers[0] else 1
        network = ("student", "discriminator")[index]
        if self._should_log():
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if params:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
                self.log(f"train/grad_norm/{network}", norm, on_step=True, on_epoch=False)
            self.log(f"train/lr/{network}", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)
        clip = (self.hparams.student_grad_clip, self.hparams.discriminator_grad_clip)[index]
        if clip is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=clip, gradient_clip_algorithm=self.hparams.grad_clip_algorithm
            )

    def _should_log(self) -> bool:
        return is_logging_step(self.trainer, self.batches_trained)

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches_trained += 1

    def _log_terms(self, network: str, terms: dict[str, Tensor], total: Tensor) -> None:
        values = {f"train/loss/{network}_{name}": value.detach() for name, value in terms.items()}
        values[f"train/loss/{network}"] = total.detach()
        values["train/student_step"] = float(self.student_step)
        values["train/discriminator_step"] = float(self.discriminator_step)
        self.log_dict(values, on_step=True, on_epoch=False)

    def _log_discriminator_health(self, real_logits: Tensor, fake_logits: Tensor, prefix: str) -> None:
        acc_real = (real_logits > 0).float().mean()
        acc_fake = (fake_logits < 0).float().mean()
        gap = torch.sigmoid(real_logits).mean() - torch.sigmoid(fake_logits).mean()
        self.log_dict(
            {f"{prefix}d_acc_real": acc_real, f"{prefix}d_acc_fake": acc_fake,
             f"{prefix}d_acc": (acc_real + acc_fake) / 2, f"{prefix}d_gap": gap},
            on_step=True, on_epoch=False,
        )  # fmt: skip

    # ------------------------------------------------------------------ evaluation

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, self.val_metrics, "val/")

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, self.test_metrics, "test/")

    def _evaluation_step(self, batch: Any, metrics: nn.ModuleDict, prefix: str) -> None:
        inputs, labels = self._split(batch)
        teacher_features, teacher_logits = self._teacher_outputs(batch, inputs)
        student = self._student_forward(inputs)
        real_logits = self.discriminator(self._critic_input(teacher_features, teacher_logits, teacher_logits))
        fake_logits = self.discriminator(self._critic_input(student.adapted, student.logits, teacher_logits))
        real_logits, fake_logits = real_logits.squeeze(1), fake_logits.squeeze(1)
        label_free = metrics["label_free"]
        label_free[f"{prefix}d_acc_real"].update(real_logits, torch.ones_like(real_logits))
        label_free[f"{prefix}d_acc_fake"].update(fake_logits, torch.zeros_like(fake_logits))
        self._update_classification_metrics(metrics, student.logits, teacher_logits, labels)
        self.log_dict(label_free, on_step=False, on_epoch=True)
        terms = self._student_loss_terms(student, teacher_features, teacher_logits)
        self.log_dict({f"{prefix}loss/student_{k}": v for k, v in terms.items()}, on_step=False, on_epoch=True)
        self.log(f"{prefix}d_gap", torch.sigmoid(real_logits).mean() - torch.sigmoid(fake_logits).mean())

    # ------------------------------------------------------------------ optimizers

    @override
    def configure_optimizers(self) -> list[dict[str, Any]]:
        student_params = list(self.student.parameters()) + list(self.adapter.parameters())
        networks = (student_params, list(self.discriminator.parameters()))
        configs = []
        for index, params in enumerate(networks):
            optimizer = self._optimizer_factories[index](params)
            factory = self._scheduler_factories[index]
            self._schedulers[index] = factory(optimizer) if factory is not None else None
            config: dict[str, Any] = {"optimizer": optimizer}
            if self._schedulers[index] is not None:
                config["lr_scheduler"] = {"scheduler": self._schedulers[index], "interval": "epoch"}
            configs.append(config)
        return configs

    # ------------------------------------------------------------------ checkpoints

    @override
    def _extra_checkpoint_state(self) -> dict[str, Any]:
        return {
            "student_step": self.student_step,
            "discriminator_step": self.discriminator_step,
            "batches_trained": self.batches_trained,
        }

    @override
    def _load_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.student_step = int(state["student_step"])
        self.discriminator_step = int(state["discriminator_step"])
        self.batches_trained = int(state.get("batches_trained", self.student_step))


# ---------------------------------------------------------------------- module-level helpers


def _check_options(
    weights: dict[str, float],
    data_term: str,
    adversarial_dropout: float,
    student_steps: int,
    discriminator_steps: int,
    scheduler_interval: str,
    grad_clip_algorithm: str,
    accumulate_grad_batches: int,
    max_student_steps: int | None,
    discriminator_input: str,
    gan_loss: str,
) -> None:
    negative = {name: value for name, value in weights.items() if value < 0}
    if negative:
        raise ValueError(f"loss weights must be >= 0 (0 switches a term off), got {negative}")
    if data_term not in ("l2", "l1", "kl", "none"):
        raise ValueError(f"data_term must be one of 'l2', 'l1', 'kl', 'none'; got {data_term!r}")
    if not 0.0 <= adversarial_dropout < 1.0:
        raise ValueError(f"adversarial_dropout must be in [0, 1), got {adversarial_dropout}")
    if student_steps < 1 or discriminator_steps < 1:
        raise ValueError(
            f"student_steps and discriminator_steps must be >= 1, got {student_steps}, {discriminator_steps}"
        )
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
    if grad_clip_algorithm not in ("norm", "value"):
        raise ValueError(f"grad_clip_algorithm must be 'norm' or 'value', got {grad_clip_algorithm!r}")
    if accumulate_grad_batches < 1:
        raise ValueError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
    if accumulate_grad_batches > 1 and (student_steps > 1 or discriminator_steps > 1):
        raise ValueError("accumulate_grad_batches > 1 cannot be combined with several updates per batch")
    if max_student_steps is not None and max_student_steps < 1:
        raise ValueError(f"max_student_steps must be >= 1 or None, got {max_student_steps}")
    if discriminator_input not in ("features", "logits"):
        raise ValueError(f"discriminator_input must be 'features' or 'logits', got {discriminator_input!r}")
    if gan_loss not in GAN_LOSSES:
        raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {gan_loss!r}")


def _check_ddp_finds_unused_parameters(model: nn.Module | None) -> None:
    """Alternating updates leave one network without gradients in every backward: DDP must allow that."""
    if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
        raise ValueError(
            "AdversarialDistillation alternates student and discriminator updates, so each backward leaves one network "
            "without gradients, which DDP refuses unless it looks for unused parameters. Use "
            "strategy='ddp_find_unused_parameters_true' (or 'ddp_spawn_find_unused_parameters_true', "
            "'ddp_fork_find_unused_parameters_true'), or DDPStrategy(find_unused_parameters=True)."
        )


def _build_discriminator(discriminator: nn.Module | DiscriminatorFactory | None, width: int) -> nn.Module:
    """The discriminator itself, completed from a factory, or the default MLP; its input width is checked."""
    if discriminator is None:
        return MLPDiscriminator(width)
    if not isinstance(discriminator, nn.Module):
        discriminator = discriminator(width)
    was_training = discriminator.training
    try:
        with torch.no_grad():
            discriminator.eval()(torch.zeros(2, width))
    except RuntimeError as err:
        raise ValueError(
            f"the discriminator cannot judge vectors of {width} features ({err}). It must take the width of what it "
            f"judges (AdversarialDistillation.discriminator_width): build it with in_features={width}, or pass a "
            "factory such as functools.partial(MLPDiscriminator, hidden=...) that the module completes"
        ) from err
    finally:
        discriminator.train(was_training)
    return discriminator


def _discriminator_metrics() -> dict[str, BinaryAccuracy]:
    return {"d_acc_real": BinaryAccuracy(), "d_acc_fake": BinaryAccuracy()}


def _discriminator_accuracy(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    real = (real_logits.detach() > 0).float().mean()
    fake = (fake_logits.detach() < 0).float().mean()
    return (real + fake) / 2


__all__ = [
    "AdversarialDistillation",
    "NonFiniteLossError",
    "default_discriminator_optimizer",
    "default_student_optimizer",
]
