"""MobileNetV2 (Sandler et al., CVPR 2018) for 32x32 inputs, in the CIFAR knowledge-distillation community's form.

The community's cross-architecture student (CRD / RepDistiller ``mobile_half``, reported as "MobileNetV2" in its
CIFAR-100 tables) is ``mobilenetv2_x0_5``: width multiplier 0.5, expansion ratio 6, a stride-2 3x3 stem and the
ImageNet stage strides except the second stage (stride 1), so a 32x32 input ends as a 2x2 map. Unlike the ImageNet
network it keeps a 1x1 expansion convolution in the expansion-1 block, uses ReLU rather than ReLU6, rounds channel
counts down (``int(c * width)``) and has no dropout before the classifier. Its last 1x1 convolution has 1280 channels
for width multipliers up to 1 (``int(1280 * width)`` above). State-dict keys follow the community's
(``conv1``, ``blocks.i.j.conv.k``, ``conv2``, ``classifier.0``).

Parameter counts (10 / 100 classes), computed from this implementation:

=================  ==========  ===========  ============
name               10 classes  100 classes  num_features
=================  ==========  ===========  ============
mobilenetv2_x0_5   697,546     812,836      1280
mobilenetv2_x1_0   2,237,770   2,353,060    1280
=================  ==========  ===========  ============
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from lightning_advkd.models._base import ClassifierNet, check_sizes, init_conv_bn
from lightning_advkd.models._registry import ModelCfg, register_model

__all__ = ["InvertedResidual", "MobileNetV2"]

# (expansion ratio, or None for the network's `expand_ratio`; output channels; blocks; stride of the first block)
_STAGES: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def _conv_bn_relu(in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True)]


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); identity shortcut when stride 1 and shapes agree."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_chans * expand_ratio
        self.use_shortcut = stride == 1 and in_chans == out_chans
        self.conv = nn.Sequential(
            *_conv_bn_relu(in_chans, hidden, 1),
            *_conv_bn_relu(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_chans, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        """The projected output, added to ``x`` when the block keeps the shape (stride 1, same channels)."""
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


class MobileNetV2(ClassifierNet):
    """MobileNetV2 for 32x32 inputs (the KD community's CIFAR variant, see the module docstring).

    Args:
        width_mult: Width multiplier of all convolutions (the last one only grows above 1).
        expand_ratio: Expansion ratio ``t`` of the inverted residual blocks (6 in the paper).
        num_classes: Number of classes.
        in_chans: Number of input channels.

    Raises:
        ValueError: If a size is not positive.

    Example:
        >>> import torch
        >>> model = MobileNetV2(width_mult=0.5, num_classes=100)
        >>> model(torch.zeros(2, 3, 32, 32)).shape, model.num_features
        (torch.Size([2, 100]), 1280)
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg(input_size=(3, 32, 32), num_classes=10)

    def __init__(
        self, width_mult: float = 1.0, expand_ratio: int = 6, num_classes: int = 10, in_chans: int = 3
    ) -> None:
        super().__init__()
        check_sizes(num_classes=num_classes, in_chans=in_chans, expand_ratio=expand_ratio)
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}.")
        channels = int(32 * width_mult)
        self.conv1 = nn.Sequential(*_conv_bn_relu(in_chans, channels, 3, stride=2))
        self.blocks = nn.ModuleList()
        for ratio, out_chans, n, stride in _STAGES:
            out_chans = int(out_chans * width_mult)
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(channels, out_chans, stride if i == 0 else 1, ratio or expand_ratio))
                channels = out_chans
            self.blocks.append(nn.Sequential(*stage))
        self.num_classes, self.in_chans = num_classes, in_chans
        self.num_features = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(*_conv_bn_relu(channels, self.num_features, 1))
        # A one-element Sequential only to keep the community's "classifier.0" key.
        self.classifier = nn.Sequential(nn.Linear(self.num_features, num_classes))
        init_conv_bn(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last 1x1 convolution's feature map, ``(N, num_features, H/16, W/16)``."""
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return self.conv2(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling, then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.classifier(x)


@register_model
def mobilenetv2_x0_5(**kwargs: Any) -> MobileNetV2:
    """MobileNetV2, width 0.5 (the community's "MobileNetV2" / ``mobile_half`` student)."""
    return MobileNetV2(width_mult=0.5, expand_ratio=6, **kwargs)


@register_model
def mobilenetv2_x1_0(**kwargs: Any) -> MobileNetV2:
    """MobileNetV2, width 1.0."""
    return MobileNetV2(width_mult=1.0, expand_ratio=6, **kwargs)
