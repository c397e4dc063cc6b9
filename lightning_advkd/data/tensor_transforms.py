"""Augmentation and normalization of uint8 image tensors, one sample or a whole batch per call.

The small-image datasets (Fashion-MNIST, CIFAR, SVHN) live in memory as uint8 ``(N, C, H, W)`` tensors. Running
torchvision's per-sample transforms on them costs a few hundred microseconds of Python per image, which on a CPU is
slower than training a small student (``benchmarks/results/data_loading.md``). :class:`TensorImageTransform` does the
standard recipe (random crop after zero padding, random horizontal flip, scaling to [0, 1], normalization) on a whole
batch with a handful of tensor operations, each sample with its own random crop and flip.
:class:`~lightning_advkd.data.TransformedSubset` hands it whole batches when the DataLoader asks for them.

Views as data: besides drawing crops and flips from torch's global generator, :class:`TensorImageTransform` can draw
them from a counter-based generator keyed by ``(seed, view, sample index)`` (:meth:`TensorImageTransform.view_params`)
and apply given parameters (:meth:`TensorImageTransform.apply`). View ``v`` of sample ``i`` is then one fixed image,
reproducible on its own, in any order, in any process: what lets a teacher's outputs on augmented images be computed
once and replayed (:class:`~lightning_advkd.AugmentedViewCache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Version of :func:`view_random_bits`; part of every recipe, so a change of the generator invalidates cached views.
VIEW_GENERATOR = "splitmix64-v1"
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


@dataclass(frozen=True)
class ViewParams:
    """The augmentation parameters of a batch of views: crop offsets into the zero-padded image and flip flags.

    Attributes:
        top: ``(B,)`` int64 row offsets in ``[0, 2 * padding]``.
        left: ``(B,)`` int64 column offsets in ``[0, 2 * padding]``.
        flip: ``(B,)`` bool, flip left-right (after the crop).
    """

    top: Tensor
    left: Tensor
    flip: Tensor

    def __len__(self) -> int:
        return len(self.flip)


class TensorImageTransform:
    """Zero-pad-and-crop, horizontal flip and normalization of uint8 image tensors; batches in one call.

    Equivalent to ``v2.Compose([v2.RandomCrop(size, padding), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32,
    scale=True), v2.Normalize(mean, std)])`` with the crop as large as the image, but vectorized over a batch.
    Called on images, it draws from torch's global generator (seeded per DataLoader worker by PyTorch), so
    ``seed_everything`` makes it reproducible. For views that are data (one fixed image per ``(seed, view, sample)``,
    whatever the order, the process or the global RNG), draw the parameters with :meth:`view_params` and
    :meth:`apply` them: ``transform.apply(images, transform.view_params(indices, view, seed))``.

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
        >>> params = transform.view_params(torch.arange(8), view=3, seed=0)
        >>> torch.equal(transform.apply(batch, params), transform.apply(batch, params))
        True
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
        batch, single = self._as_batch(images)
        if self.padding:
            batch = random_crop(batch, self.padding)
        if self.hflip:
            batch = random_hflip(batch)
        out = self._normalize(batch)
        return out[0] if single else out

    def apply(self, images: Tensor, params: ViewParams) -> Tensor:
        """Transform a ``(B, C, H, W)`` uint8 batch (or one ``(C, H, W)`` image) with given crops and flips.

        Args:
            images: uint8 images.
            params: one crop offset pair and flip flag per image (from :meth:`view_params` or stored ones).

        Raises:
            ValueError: when ``params`` has another length than the batch, or offsets outside ``[0, 2 * padding]``.
        """
        batch, single = self._as_batch(images)
        if len(params) != len(batch):
            raise ValueError(f"{len(params)} view parameters for {len(batch)} images: pass one per image")
        span = 2 * self.padding
        for name, offsets in (("top", params.top), ("left", params.left)):
            if len(offsets) and (int(offsets.min()) < 0 or int(offsets.max()) > span):
                raise ValueError(f"crop offsets {name} must lie in [0, {span}] (padding {self.padding})")
        if self.padding:
            batch = crop(batch, self.padding, params.top, params.left)
        if self.hflip:
            batch = hflip(batch, params.flip)
        out = self._normalize(batch)
        return out[0] if single else out

    def view_params(self, indices: Tensor | Sequence[int], view: int, seed: int) -> ViewParams:
        """Crop offsets and flips of view ``view`` of the samples ``indices``, a function of ``(seed, view, index)``.

        Each sample's parameters come from its own counter-based generator (:func:`view_random_bits`), so a view is
        the same whether drawn alone or in a batch, in any order, and the global RNG is neither read nor moved. Without
        padding every offset is 0; without ``hflip`` no image is flipped.
        """
        index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        bits = view_random_bits(index, view, seed, streams=3)
        span = 2 * self.padding + 1
        zeros = torch.zeros(len(index), dtype=torch.int64)
        top = bits[0].remainder(span) if self.padding else zeros
        left = bits[1].remainder(span) if self.padding else zeros
        flip = bits[2].bitwise_and(1).bool() if self.hflip else torch.zeros(len(index), dtype=torch.bool)
        return ViewParams(top, left, flip)

    @property
    def recipe(self) -> str:
        """A string naming everything that decides a view's pixels: the transform's settings and the generator."""
        return f"{self!r}|{VIEW_GENERATOR}"

    def _as_batch(self, images: Tensor) -> tuple[Tensor, bool]:
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
        return batch, single

    def _normalize(self, batch: Tensor) -> Tensor:
        # the operations, in the order torchvision applies them: bit-identical to its ToDtype + Normalize
        return batch.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, "
            f"padding={self.padding}, hflip={self.hflip})"
        )


def random_crop(batch: Tensor, padding: int) -> Tensor:
    """Zero-pad each image by ``padding`` and crop it back to its size at a random offset of its own."""
    b = batch.shape[0]
    top = torch.randint(0, 2 * padding + 1, (b,))
    left = torch.randint(0, 2 * padding + 1, (b,))
    return crop(batch, padding, top, left)


def crop(batch: Tensor, padding: int, top: Tensor, left: Tensor) -> Tensor:
    """Zero-pad each image by ``padding`` and crop it back to its size at row ``top[i]``, column ``left[i]``.

    One ``gather`` over the flattened padded images: the crop at row offset ``top`` and column offset ``left`` reads
    positions ``top * width + left + (r * width + c)``, with ``width`` the padded width.
    """
    b, c, h, w = batch.shape
    padded = F.pad(batch, (padding,) * 4)
    width = w + 2 * padding
    pattern = (torch.arange(h)[:, None] * width + torch.arange(w)).view(1, 1, h * w)
    index = ((top * width + left).view(b, 1, 1) + pattern).expand(b, c, h * w)
    return padded.view(b, c, -1).gather(2, index).view(b, c, h, w)


def random_hflip(batch: Tensor) -> Tensor:
    """Flip each image left-right with probability 0.5, independently."""
    return hflip(batch, torch.rand(batch.shape[0]) < 0.5)


def hflip(batch: Tensor, flip: Tensor) -> Tensor:
    """Flip left-right the images whose ``flip`` flag is set."""
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def view_random_bits(indices: Tensor, view: int, seed: int, streams: int) -> Tensor:
    """``(streams, len(indices))`` non-negative random int64, each a function of ``(seed, view, index, stream)`` only.

    A counter-based generator: SplitMix64's finalizer applied to a chain of the key's parts (Steele, Lea & Flood,
    "Fast splittable pseudorandom number generators", OOPSLA 2014). The 63 low bits are kept, so ``remainder`` by a
    small span has a bias below 1e-17.
    """
    with np.errstate(over="ignore"):
        key = _splitmix(_splitmix(np.uint64((int(seed) + 1) * _GOLDEN & _MASK64)) + np.uint64(int(view) & _MASK64))
        index = indices.numpy().astype(np.uint64)
        base = _splitmix(key ^ _splitmix(index + np.uint64(_GOLDEN)))
        rows = [_splitmix(base + np.uint64((s + 1) * _GOLDEN & _MASK64)) for s in range(streams)]
    bits = np.stack(rows) >> np.uint64(1)
    return torch.from_numpy(bits.astype(np.int64))


def _splitmix(x: np.ndarray | np.uint64) -> np.ndarray:
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
