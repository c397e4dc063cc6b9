"""Augmentation and normalization of uint8 image tensors, one sample or a whole batch per call.

The small-image datasets (Fashion-MNIST, CIFAR, SVHN) live in memory as uint8 ``(N, C, H, W)`` tensors. Running
torchvision's per-sample transforms on them costs a few hundred microseconds of Python per image, which on a CPU is
slower than training a small student (``benchmarks/results/data_loading.md``). :class:`TensorImageTransform` does the
standard recipe (random crop after zero padding, random horizontal flip, scaling to [0, 1], normalization) on a whole
batch with a handful of tensor operations, each sample with its own random crop and flip.
:class:`~lightning_advkd.data.TransformedSubset` hands it whole batches when the DataLoader asks for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


class TensorImageTransform:
    """Zero-pad-and-crop, horizontal flip and normalization of uint8 image tensors; batches in one call.

    Equivalent to ``v2.Compose([v2.RandomCrop(size, padding), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32,
    scale=True), v2.Normalize(mean, std)])`` with the crop as large as the image, but vectorized over a batch.
    Randomness comes from torch's global generator (seeded per DataLoader worker by PyTorch), so
    ``seed_everything`` makes it reproducible.

    Args:
        mean: Per-channel mean of the [0, 1]-scaled images.
        std: Per-channel standard deviation of the [0, 1]-scaled images.
        padding: Zero padding on every side before the random crop back to the image size; 0: no crop.
        hflip: Flip each image horizontally with probability 0.5.

    Example:
        >>> transform = TensorImageTransform(mean=[0.5], std=[0.5], padding=2, hflip=True)
        >>> batch = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
        >>> transform(batch).shape, transform(batch[0]).shape
        (torch.Size([8, 1, 28, 28]), torch.Size([1, 28, 28]))
    """

    #: Tells :class:`~lightning_advkd.data.TransformedSubset` it may pass whole ``(B, C, H, W)`` batches.
    accepts_batches = True

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, padding: int = 0, hflip: bool = False) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel each, got {list(mean)} and {list(std)}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.mean = torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(1, -1, 1, 1)
        self.padding = padding
        self.hflip = hflip

    def __call__(self, images: Tensor) -> Tensor:
        """Transform one ``(C, H, W)`` image or a ``(B, C, H, W)`` batch of uint8 images to normalized float32."""
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() not in (3, 4):
            raise TypeError(
                "TensorImageTransform expects uint8 image tensors of shape (C, H, W) or (B, C, H, W), got "
                f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}; "
                "use torchvision transforms for PIL images"
            )
        single = images.dim() == 3
        batch = images.unsqueeze(0) if single else images
        if batch.shape[1] != self.mean.shape[1]:
            raise ValueError(f"images have {batch.shape[1]} channels but mean/std {self.mean.shape[1]}")
        if self.padding:
            batch = random_crop(batch, self.padding)
        if self.hflip:
            batch = random_hflip(batch)
        # the operations, in the order torchvision applies them: bit-identical to its ToDtype + Normalize
        out = batch.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)
        return out[0] if single else out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, "
            f"padding={self.padding}, hflip={self.hflip})"
        )


def random_crop(batch: Tensor, padding: int) -> Tensor:
    """Zero-pad each image by ``padding`` and crop it back to its size at a random offset of its own.

    One ``gather`` over the flattened padded images: the crop at row offset ``top`` and column offset ``left`` reads
    positions ``top * width + left + (r * width + c)``, with ``width`` the padded width.
    """
    b, c, h, w = batch.shape
    padded = F.pad(batch, (padding,) * 4)
    width = w + 2 * padding
    top = torch.randint(0, 2 * padding + 1, (b,))
    left = torch.randint(0, 2 * padding + 1, (b,))
    pattern = (torch.arange(h)[:, None] * width + torch.arange(w)).view(1, 1, h * w)
    index = ((top * width + left).view(b, 1, 1) + pattern).expand(b, c, h * w)
    return padded.view(b, c, -1).gather(2, index).view(b, c, h, w)


def random_hflip(batch: Tensor) -> Tensor:
    """Flip each image left-right with probability 0.5, independently."""
    flip = torch.rand(batch.shape[0]) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)
