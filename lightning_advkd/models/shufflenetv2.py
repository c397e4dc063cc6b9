"""ShuffleNetV2 (Ma et al., ECCV 2018) for 32x32 inputs, in the CIFAR knowledge-distillation community's form.

The community's cross-architecture student (CRD / RepDistiller ``ShuffleV2``) is ``shufflenetv2_x1_0``. For 32x32
inputs its stem is a 1x1 convolution + BN + ReLU with 24 channels and no max pooling; three stages (each a stride-2
down-sampling unit then 3/7/3 basic units with channel split and shuffle) take the map from 32x32 to 4x4; a 1x1
convolution + BN + ReLU, global average pooling and one linear classifier follow. State-dict keys follow the
community's (``conv1``, ``layer1.0.conv1``, ..., ``conv2``, ``bn2``, ``linear``).

Parameter counts (10 / 100 classes), computed from this implementation:

==================  ==========  ===========  ============
name                10 classes  100 classes  num_features
==================  ==========  ===========  ============
shufflenetv2_x0_5   351,466     443,716      1024
shufflenetv2_x1_0   1,263,278   1,355,528    1024
shufflenetv2_x1_5   2,488,298   2,580,548    1024
shufflenetv2_x2_0   5,337,450   5,521,860    2048
==================  ==========  ===========  ============
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_advkd.models._base import ClassifierNet, check_sizes, init_conv_bn
from lightning_advkd.models._registry import ModelCfg, register_model

__all__ = ["SHUFFLENETV2_CFGS", "ShuffleNetV2"]

# net size -> (stage output channels, final 1x1 conv channels), (basic units per stage); the paper's Table 5.
SHUFFLENETV2_CFGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


def _channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Basic unit: split the channels in half, transform one half (1x1, depthwise 3x3, 1x1), concatenate, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        kept, transformed = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(transformed)), inplace=True)
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)), inplace=True)
        return _channel_shuffle(torch.cat([kept, out], dim=1))


class ShuffleDownUnit(nn.Module):
    """Down-sampling unit: two stride-2 branches on the whole input, concatenated (doubling the width), shuffled."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        mid = out_chans // 2
        # left branch: depthwise 3x3 stride 2, then 1x1
        self.conv1 = nn.Conv2d(in_chans, in_chans, kernel_size=3, stride=2, padding=1, groups=in_chans, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.conv2 = nn.Conv2d(in_chans, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1x1, depthwise 3x3 stride 2, 1x1
        self.conv3 = nn.Conv2d(in_chans, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))), inplace=True)
        right = F.relu(self.bn3(self.conv3(x)), inplace=True)
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))), inplace=True)
        return _channel_shuffle(torch.cat([left, right], dim=1))


class ShuffleNetV2(ClassifierNet):
    """ShuffleNetV2 for 32x32 inputs (the KD community's CIFAR variant, see the module docstring).

    Args:
        net_size: Width setting of the paper's Table 5: 0.5, 1.0, 1.5 or 2.0.
        num_classes: Number of classes.
        in_chans: Number of input channels.

    Raises:
        ValueError: For an unknown ``net_size`` or a size that is not positive.

    Example:
        >>> import torch
        >>> model = ShuffleNetV2(net_size=1.0, num_classes=100)
        >>> model(torch.zeros(2, 3, 32, 32)).shape, model.num_features
        (torch.Size([2, 100]), 1024)
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg(input_size=(3, 32, 32), num_classes=10)

    def __init__(self, net_size: float = 1.0, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        check_sizes(num_classes=num_classes, in_chans=in_chans)
        if net_size not in SHUFFLENETV2_CFGS:
            raise ValueError(f"net_size must be one of {sorted(SHUFFLENETV2_CFGS)}, got {net_size}.")
        widths, depths = SHUFFLENETV2_CFGS[net_size]
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, widths[3]
        self.conv1 = nn.Conv2d(in_chans, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.layer1 = self._stage(24, widths[0], depths[0])
        self.layer2 = self._stage(widths[0], widths[1], depths[1])
        self.layer3 = self._stage(widths[1], widths[2], depths[2])
        self.conv2 = nn.Conv2d(widths[2], widths[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)
        init_conv_bn(self)

    @staticmethod
    def _stage(in_chans: int, out_chans: int, n: int) -> nn.Sequential:
        return nn.Sequential(ShuffleDownUnit(in_chans, out_chans), *(ShuffleUnit(out_chans) for _ in range(n)))

    def forward_features(self, x: Tensor) -> Tensor:
        """The final 1x1 convolution's feature map, ``(N, num_features, H/8, W/8)``."""
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.relu(self.bn2(self.conv2(x)), inplace=True)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling, then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.linear(x)


@register_model
def shufflenetv2_x0_5(**kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 0.5x."""
    return ShuffleNetV2(net_size=0.5, **kwargs)


@register_model
def shufflenetv2_x1_0(**kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 1x (the community's ``ShuffleV2`` student)."""
    return ShuffleNetV2(net_size=1.0, **kwargs)


@register_model
def shufflenetv2_x1_5(**kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 1.5x."""
    return ShuffleNetV2(net_size=1.5, **kwargs)


@register_model
def shufflenetv2_x2_0(**kwargs: Any) -> ShuffleNetV2:
    """ShuffleNetV2 2x."""
    return ShuffleNetV2(net_size=2.0, **kwargs)
