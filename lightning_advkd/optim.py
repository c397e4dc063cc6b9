"""The optimizer recipes of the package and the factory types the modules take (e.g. Hydra ``_partial_`` nodes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]


def default_student_optimizer(params: Iterable[nn.Parameter]) -> Optimizer:
    """SGD, lr 0.05, momentum 0.9, weight decay 5e-4: the community recipe for students trained from scratch.

    Example:
        >>> default_student_optimizer(nn.Linear(2, 2).parameters()).defaults["lr"]
        0.05
    """
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def default_discriminator_optimizer(params: Iterable[nn.Parameter]) -> Optimizer:
    """Adam, lr 2e-4, betas (0.5, 0.999): the usual GAN discriminator setting."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), foreach=True)


__all__ = ["OptimizerFactory", "SchedulerFactory", "default_discriminator_optimizer", "default_student_optimizer"]
