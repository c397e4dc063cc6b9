"""Early, clear errors for what a module is fed: Trainer options, the training set, the first batch, bad values.

Each check is cheap (a dtype, a shape, a count, one ``isfinite`` over a validation batch) and names the fix, so a
mistake costs seconds instead of ending deep inside a network or as silent NaN metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn


def check_manual_optimization_trainer(trainer: L.Trainer, owner: str) -> None:
    """Refuse the Trainer options that manual optimization cannot honour, naming the module's own.

    Raises:
        ValueError: on ``Trainer(gradient_clip_val=...)`` or ``Trainer(accumulate_grad_batches=...)``.
    """
    if trainer.gradient_clip_val is not None:
        raise ValueError(
            f"{owner} updates its networks itself (manual optimization), so Trainer(gradient_clip_val="
            f"{trainer.gradient_clip_val}) cannot apply: remove it and use {owner}(student_grad_clip=..., "
            "discriminator_grad_clip=..., grad_clip_algorithm='norm'|'value') instead"
        )
    if trainer.accumulate_grad_batches != 1:
        raise ValueError(
            f"{owner} updates its networks itself (manual optimization), so Trainer(accumulate_grad_batches="
            f"{trainer.accumulate_grad_batches}) cannot apply: remove it and use "
            f"{owner}(accumulate_grad_batches={trainer.accumulate_grad_batches}) instead"
        )


def check_training_set(trainer: L.Trainer) -> None:
    """Refuse a fit whose training loader yields no batch.

    An empty dataset, or ``drop_last`` on a small one, is refused unless the Trainer was asked for no batch
    (``limit_train_batches=0``).

    Raises:
        ValueError: when the Trainer counts 0 training batches.
    """
    if trainer.num_training_batches == 0 and trainer.limit_train_batches != 0:
        raise ValueError(
            "the training set is empty: the train dataloader yields no batch (an empty dataset, a wrong data path or "
            "split, or drop_last=True with fewer samples than batch_size). Check the datamodule's training data"
        )


def expected_channels(input_shape: Sequence[int] | None, *networks: nn.Module) -> int | None:
    """The input channel count: from ``input_shape``, else the first ``nn.Conv2d`` of the networks when they agree."""
    if input_shape is not None and len(input_shape) == 3:
        return int(input_shape[0])
    found = set()
    for network in networks:
        conv = next((m for m in network.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            return None
        found.add(conv.in_channels)
    return found.pop() if len(found) == 1 else None


def check_first_batch(inputs: Tensor, channels: int | None, owner: str) -> None:
    """Check the inputs of the first batch: floating point, and ``(N, channels, H, W)`` when a count is known.

    Raises:
        TypeError: on integer inputs (e.g. raw ``uint8`` pixels).
        ValueError: on another channel count.
    """
    if not inputs.is_floating_point():
        raise TypeError(
            f"{owner} got {inputs.dtype} inputs (raw pixels?); the networks expect floating-point tensors, e.g. "
            "float32 images scaled to [0, 1] and normalized as the teacher was trained. Convert in the dataset "
            "(torchvision ToTensor / v2.ToDtype(torch.float32, scale=True), or images.float() / 255)"
        )
    if channels is not None and inputs.dim() == 4 and inputs.shape[1] != channels:
        raise ValueError(
            f"{owner} got inputs with {inputs.shape[1]} channels (shape {tuple(inputs.shape)}) but the networks take "
            f"{channels}-channel (N, {channels}, H, W) images: convert the images (e.g. grayscale to RGB with "
            f"x.expand(-1, {channels}, -1, -1)) or build the networks with in_chans={inputs.shape[1]}"
        )


class NonFiniteInputWarning:
    """Reports the first evaluation batch with NaN or infinite inputs, once per module (not per batch)."""

    def __init__(self) -> None:
        self.reported = False

    def check(self, inputs: Tensor, batch_idx: int, stage: str) -> None:
        """Warn once when ``inputs`` hold NaN or infinite values."""
        if self.reported or not inputs.is_floating_point() or bool(inputs.isfinite().all()):
            return
        self.reported = True
        bad = int((~inputs.isfinite()).flatten(1).any(dim=1).sum()) if inputs.dim() > 1 else 1
        rank_zero_warn(
            f"{stage} batch {batch_idx} holds NaN or infinite inputs ({bad} of {len(inputs)} samples): the {stage} "
            "metrics of this epoch will be NaN or meaningless. Check the data (normalization of constant images, "
            "corrupt files) of that batch; only the first such batch is reported"
        )


__all__ = [
    "NonFiniteInputWarning",
    "check_first_batch",
    "check_manual_optimization_trainer",
    "check_training_set",
    "expected_channels",
]
