"""The two-player update loop under AdversarialDistillation: manual steps of a student and a discriminator optimizer.

What alternating updates need and Lightning's automatic optimization cannot give: per-network optimizers and
schedulers stepped by hand, gradient accumulation and clipping done by the module (the Trainer's own options are
refused with the module's named), step counters separate from ``global_step``, a non-finite-loss guard, per-step
logging on the Trainer's cadence, and BatchNorm statistics shared across DDP replicas before evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from typing_extensions import override

from lightning_advkd import functional as AF
from lightning_advkd import guards
from lightning_advkd._logging import is_logging_step
from lightning_advkd.critic_input import CriticInput
from lightning_advkd.discriminator import MLPDiscriminator, judge
from lightning_advkd.metrics import discriminator_accuracies
from lightning_advkd.objective import total
from lightning_advkd.optim import OptimizerFactory, SchedulerFactory, default_discriminator_optimizer
from lightning_advkd.regularizer import DiscriminatorRegularizer, DiscriminatorStepInputs
from lightning_advkd.teacher_student import TeacherStudentModule

DiscriminatorFactory = Callable[[int], nn.Module]


@dataclass
class StudentOutputs:
    """One student forward pass: feature, logits, adapted clean and perturbed features, clean and perturbed layers.

    The layers are the attention vectors of the discriminator's layers (``None`` without ``discriminator_layers``).
    """

    features: Tensor
    logits: Tensor
    adapted: Tensor
    perturbed: Tensor
    layers: Tensor | None = None
    perturbed_layers: Tensor | None = None


class TeacherOutputs(NamedTuple):
    """The frozen teacher's outputs for a batch: pooled feature, logits, attention vectors of the layers (or None)."""

    features: Tensor
    logits: Tensor
    layers: Tensor | None = None


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite during training."""


class TwoPlayerModule(TeacherStudentModule):
    """A teacher-student module whose student (with its adapter) and discriminator are updated by hand.

    Subclasses set ``self.adapter``, ``self.discriminator`` and ``self._regularizers``, define
    ``self.critic_input`` (a :class:`~lightning_advkd.critic_input.CriticInput`: what the discriminator judges), call
    :meth:`_init_two_player` with the optimizer and scheduler factories, and keep in ``hparams``:
    ``accumulate_grad_batches``, ``scheduler_interval``, ``student_steps``, ``discriminator_steps``,
    ``student_grad_clip``, ``discriminator_grad_clip``, ``grad_clip_algorithm`` and ``check_finite``.
    """

    adapter: nn.Module
    discriminator: nn.Module
    discriminator_accuracy: Tensor | None
    _regularizers: list[DiscriminatorRegularizer]
    critic_input: CriticInput

    def _init_two_player(
        self,
        optimizers: tuple[OptimizerFactory, OptimizerFactory | None],
        schedulers: tuple[SchedulerFactory | None, ...],
    ) -> None:
        self.automatic_optimization = False
        self._optimizer_factories = (optimizers[0], optimizers[1] or default_discriminator_optimizer)
        self._scheduler_factories = schedulers
        self._schedulers: list[LRScheduler | None] = [None, None]
        self.student_step = 0
        self.discriminator_step = 0
        self._batch_idx = 0
        self.batches_trained = 0  # over the whole fit, checkpointed: when per-step metrics are written

    @override
    def configure_callbacks(self) -> list[Callback]:
        # The earliest hook of a fit, before the Trainer validates its options against manual optimization with a
        # generic message: refuse them here with the module's own options named.
        if self.trainer.state.fn == "fit":
            guards.check_manual_optimization_trainer(self.trainer, type(self).__name__)
        return []

    def _discriminator_updates(self, teacher: TeacherOutputs, student: StudentOutputs) -> None:
        logits = student.logits.detach()
        real = self._critic_input_of_teacher(teacher)
        fake = self.critic_input(student.adapted.detach(), logits, teacher.logits, _detached(student.layers))
        perturbed = fake
        if self.hparams["discriminator_input"] == "features" or student.perturbed_layers is not None:
            perturbed = self.critic_input(
                student.perturbed.detach(), logits, teacher.logits, _detached(student.perturbed_layers)
            )
        for regularizer in self._regularizers:
            real, fake = regularizer.transform_inputs(real, fake)
        if any(r.requires_real_grad for r in self._regularizers):
            real = real.detach().requires_grad_(True)
        optimizer = cast("list[LightningOptimizer]", self.optimizers())[1]  # two optimizers: always a list
        for _ in range(self.hparams["discriminator_steps"]):
            with self.toggled_optimizer(optimizer):
                inputs = self._judged(real, fake, perturbed)
                terms = self._discriminator_loss_terms(inputs)
                loss = self._total(terms, "discriminator")
                self.manual_backward(loss / self.hparams["accumulate_grad_batches"])
                if self._is_update_batch():
                    self.discriminator_step += int(self._optimizer_step(optimizer, 1))
            acc_real, acc_fake = discriminator_accuracies(inputs.real_logits, inputs.fake_logits)
            self.discriminator_accuracy = (acc_real + acc_fake) / 2
            for regularizer in self._regularizers:
                regularizer.on_discriminator_step(self.trainer, self.discriminator_step, self.discriminator_accuracy)
        if self._should_log():
            self._log_terms("discriminator", terms, loss)
            self._log_discriminator_health(inputs.real_logits.detach(), inputs.fake_logits.detach(), "train/")

    def _judged(self, real: Tensor, fake: Tensor, perturbed: Tensor) -> DiscriminatorStepInputs:
        """One discriminator pass over the step's batches; the adversarial samples only if a regularizer reads them."""
        if perturbed is fake or not any(r.requires_perturbed_fake for r in self._regularizers):
            real_logits, fake_logits = judge(self.discriminator, real, fake)
            perturbed_logits = fake_logits if perturbed is fake else None
        else:
            real_logits, fake_logits, perturbed_logits = judge(self.discriminator, real, fake, perturbed)
        return DiscriminatorStepInputs(
            self.discriminator, real, fake, perturbed, real_logits, fake_logits, perturbed_logits
        )

    def _critic_input_of_teacher(self, teacher: TeacherOutputs) -> Tensor:
        return self.critic_input(teacher.features, teacher.logits, teacher.logits, teacher.layers)

    def _discriminator_loss_terms(self, inputs: DiscriminatorStepInputs) -> dict[str, Tensor]:
        real_target = min((r.real_target() for r in self._regularizers), default=1.0)
        terms = {
            "gan": AF.discriminator_loss(inputs.real_logits, inputs.fake_logits, real_target, self.hparams["gan_loss"])
        }
        for regularizer in self._regularizers:
            penalty = regularizer.penalty(inputs)
            if penalty is not None:
                terms[f"reg_{regularizer.name}"] = penalty
        return terms

    def _total(self, terms: dict[str, Tensor], network: str) -> Tensor:
        loss = total(terms)
        if self.hparams["check_finite"] and not bool(torch.isfinite(loss)):
            bad = [name for name, value in terms.items() if not bool(torch.isfinite(value))]
            steps = self.student_step if network == "student" else self.discriminator_step
            raise NonFiniteLossError(
                f"non-finite {network} loss at {network} step {steps} (global step {self.global_step}): term(s) "
                f"{bad} = {[float(terms[n].detach()) for n in bad]}. Training stopped; the last saved checkpoint "
                "is intact. "
                "Lower the learning rate, enable gradient clipping, or check the inputs for NaN."
            )
        return loss

    def _is_update_batch(self) -> bool:
        """With hand-made gradient accumulation: does this batch end an accumulation window?"""
        accumulate = self.hparams["accumulate_grad_batches"]
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
        scheduler = self._schedulers[index]
        if not skipped and self.hparams["scheduler_interval"] == "step" and scheduler is not None:
            scheduler.step()
        return not skipped

    @override
    def on_train_epoch_end(self) -> None:
        if self.hparams["scheduler_interval"] == "epoch":
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
        clip = (self.hparams["student_grad_clip"], self.hparams["discriminator_grad_clip"])[index]
        if clip is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=clip, gradient_clip_algorithm=self.hparams["grad_clip_algorithm"]
            )

    def _should_log(self) -> bool:
        return is_logging_step(self.trainer, self.batches_trained)

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches_trained += 1

    def _log_terms(self, network: str, terms: dict[str, Tensor], total: Tensor) -> None:
        values: dict[str, Tensor | float] = {
            f"train/loss/{network}_{name}": value.detach() for name, value in terms.items()
        }
        values[f"train/loss/{network}"] = total.detach()
        values["train/student_step"] = float(self.student_step)
        values["train/discriminator_step"] = float(self.discriminator_step)
        self.log_dict(values, on_step=True, on_epoch=False)

    def _log_discriminator_health(self, real_logits: Tensor, fake_logits: Tensor, prefix: str) -> None:
        acc_real, acc_fake = discriminator_accuracies(real_logits, fake_logits)
        gap = torch.sigmoid(real_logits).mean() - torch.sigmoid(fake_logits).mean()
        self.log_dict(
            {f"{prefix}d_acc_real": acc_real, f"{prefix}d_acc_fake": acc_fake,
             f"{prefix}d_acc": (acc_real + acc_fake) / 2, f"{prefix}d_gap": gap},
            on_step=True, on_epoch=False,
        )  # fmt: skip

    # ------------------------------------------------------------------ optimizers

    # Lightning accepts a list mixing optimizer configs with and without "lr_scheduler"; its return hint does not.
    @override
    def configure_optimizers(self) -> list[dict[str, Any]]:  # type: ignore[override]
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


def _detached(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach()


def check_ddp_finds_unused_parameters(model: nn.Module | None) -> None:
    """Alternating updates leave one network without gradients in every backward: DDP must allow that."""
    if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
        raise ValueError(
            "AdversarialDistillation alternates student and discriminator updates, so each backward leaves one network "
            "without gradients, which DDP refuses unless it looks for unused parameters. Use "
            "strategy='ddp_find_unused_parameters_true' (or 'ddp_spawn_find_unused_parameters_true', "
            "'ddp_fork_find_unused_parameters_true'), or DDPStrategy(find_unused_parameters=True)."
        )


def check_loop_options(
    student_steps: int,
    discriminator_steps: int,
    scheduler_interval: str,
    grad_clip_algorithm: str,
    accumulate_grad_batches: int,
    max_student_steps: int | None,
) -> None:
    """Check the loop's options at construction, with the accepted values in the message."""
    problems = [
        (student_steps < 1 or discriminator_steps < 1,
         f"student_steps and discriminator_steps must be >= 1, got {student_steps}, {discriminator_steps}"),
        (scheduler_interval not in ("step", "epoch"),
         f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}"),
        (grad_clip_algorithm not in ("norm", "value"),
         f"grad_clip_algorithm must be 'norm' or 'value', got {grad_clip_algorithm!r}"),
        (accumulate_grad_batches < 1, f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}"),
        (accumulate_grad_batches > 1 and (student_steps > 1 or discriminator_steps > 1),
         "accumulate_grad_batches > 1 cannot be combined with several updates per batch"),
        (max_student_steps is not None and max_student_steps < 1,
         f"max_student_steps must be >= 1 or None, got {max_student_steps}"),
    ]  # fmt: skip
    for failed, message in problems:
        if failed:
            raise ValueError(message)


def build_discriminator(discriminator: nn.Module | DiscriminatorFactory | None, width: int) -> nn.Module:
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


__all__ = [
    "DiscriminatorFactory",
    "NonFiniteLossError",
    "StudentOutputs",
    "TeacherOutputs",
    "TwoPlayerModule",
    "build_discriminator",
    "check_ddp_finds_unused_parameters",
    "check_loop_options",
]
