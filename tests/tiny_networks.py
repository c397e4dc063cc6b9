"""Small teacher and student networks and data used across the core tests (module level: picklable for ddp_spawn)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 4
IMAGE_SHAPE = (1, 8, 8)


class TinyTeacher(nn.Module):
    """Conv + BatchNorm + pooled 24-wide feature + Linear classifier."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))


class TinyStudent(nn.Module):
    """Narrower conv + BatchNorm + dropout + Linear classifier (feature width 8)."""

    def __init__(self, width: int = 8, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.body(x)).flatten(1)))


def make_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, *IMAGE_SHAPE, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    return images, labels


def make_loader(n: int = 64, batch_size: int = 16, shuffle: bool = False, labels: bool = True) -> DataLoader:
    images, targets = make_data(n)
    dataset = TensorDataset(images, targets) if labels else TensorDataset(images)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)


def make_networks(seed: int = 0) -> tuple[TinyTeacher, TinyStudent]:
    torch.manual_seed(seed)
    return TinyTeacher(), TinyStudent()
