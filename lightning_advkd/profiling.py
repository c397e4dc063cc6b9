"""Size and cost of a network: parameters, multiply-accumulates, serialized size and CPU latency."""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelProfile:
    """What a compressed model costs.

    Attributes:
        parameters: number of parameters.
        macs: multiply-accumulates of one forward pass on one input (convolutions and linear layers).
        size_bytes: size of the serialized ``state_dict``.
        latency_ms: median CPU wall time per image at batch size 1, in milliseconds.
    """

    parameters: int
    macs: int
    size_bytes: int
    latency_ms: float


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on one input of ``input_shape`` (convolutions and linear layers).

    Example:
        >>> count_macs(nn.Linear(10, 5), (10,))
        50
    """
    total = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
        total += output[0].numel() * kernel

    def linear_hook(module: nn.Linear, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += output[0].numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=_device(model)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def cpu_latency_ms(model: nn.Module, input_shape: Sequence[int], repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass at batch size 1 on the CPU, in milliseconds (the model is not moved)."""
    if _device(model).type != "cpu":
        raise ValueError("cpu_latency_ms measures a model on the CPU: move it with model.cpu() first")
    was_training = model.training
    model.eval()
    x = torch.randn(1, *input_shape)
    timings = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                timings.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return statistics.median(timings)


def profile_model(model: nn.Module, input_shape: Sequence[int], repeats: int = 30) -> ModelProfile:
    """Parameters, MACs, serialized size and CPU latency of a CPU model, for one input of ``input_shape``."""
    return ModelProfile(
        parameters=count_parameters(model),
        macs=count_macs(model, input_shape),
        size_bytes=serialized_size(model),
        latency_ms=cpu_latency_ms(model, input_shape, repeats=repeats),
    )


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
