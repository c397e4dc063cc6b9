"""VGG with BatchNorm for 32x32 inputs, in the CIFAR knowledge-distillation community's form (CRD / RepDistiller).

Five blocks of 3x3 convolution (with bias) + BN + ReLU; 2x2 max pooling after the first three blocks (32 -> 16 -> 8
-> 4), global average pooling after the fifth and a single ``Linear(512, num_classes)`` classifier: the
fully-connected layers of ImageNet VGG are gone. Block widths: ``vgg8`` 64/128/256/512/512 with one convolution per
block; ``vgg11`` and ``vgg13`` as configurations A and B of Simonyan & Zisserman (2015). State-dict keys follow the
community's (``block0.0``, ``block0.1``, ..., ``classifier``). (The community code adds a fourth max pooling for
64x64 inputs only; here larger inputs simply reach the global pooling with a larger map.)

Parameter counts (10 / 100 classes), computed from this implementation:

======  ==========  ===========  ============
name    10 classes  100 classes  num_features
======  ==========  ===========  ============
vgg8    3,918,858   3,965,028    512
vgg11   9,231,114   9,277,284    512
vgg13   9,416,010   9,462,180    512
======  ==========  ===========  ============
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from lightning_advkd.models._base import ClassifierNet, check_sizes, init_conv_bn
from lightning_advkd.models._registry import ModelCfg, register_model

__all__ = ["VGG"]

VGG_CFGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def _block(in_chans: int, widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_chans, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_chans = width
    return nn.Sequential(*layers)


class VGG(ClassifierNet):
    """VGG-BN for 32x32 inputs with five convolution blocks, global average pooling and one linear classifier.

    Args:
        cfg: Convolution widths of each of the five blocks, e.g. ``VGG_CFGS["vgg13"]``.
        num_classes: Number of classes.
        in_chans: Number of input channels.

    Raises:
        ValueError: If ``cfg`` does not have five non-empty blocks or a size is not positive.

    Example:
        >>> import torch
        >>> model = VGG(VGG_CFGS["vgg8"], num_classes=100)
        >>> model(torch.zeros(2, 3, 32, 32)).shape, model.num_features
        (torch.Size([2, 100]), 512)
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg(input_size=(3, 32, 32), num_classes=10)

    def __init__(self, cfg: Sequence[Sequence[int]], num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        check_sizes(num_classes=num_classes, in_chans=in_chans)
        if len(cfg) != 5 or not all(cfg):
            raise ValueError(f"VGG cfg must list the widths of 5 non-empty blocks, got {cfg}.")
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, cfg[-1][-1]
        self.block0 = _block(in_chans, cfg[0])
        self.block1 = _block(cfg[0][-1], cfg[1])
        self.block2 = _block(cfg[1][-1], cfg[2])
        self.block3 = _block(cfg[2][-1], cfg[3])
        self.block4 = _block(cfg[3][-1], cfg[4])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.classifier = nn.Linear(self.num_features, num_classes)
        init_conv_bn(self)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The fifth block's feature map, ``(N, num_features, H/8, W/8)``."""
        x = self.pool(self.block0(x))
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        return self.block4(self.block3(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling, then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.classifier(x)


@register_model
def vgg8(**kwargs: Any) -> VGG:
    """VGG-8 with BN (one convolution per block), 3.9 M parameters: the community's student of VGG-13."""
    return VGG(VGG_CFGS["vgg8"], **kwargs)


@register_model
def vgg11(**kwargs: Any) -> VGG:
    """VGG-11 with BN (configuration A), 9.2 M parameters."""
    return VGG(VGG_CFGS["vgg11"], **kwargs)


@register_model
def vgg13(**kwargs: Any) -> VGG:
    """VGG-13 with BN (configuration B), 9.4 M parameters: the community's teacher."""
    return VGG(VGG_CFGS["vgg13"], **kwargs)
