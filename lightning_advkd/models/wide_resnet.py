"""Wide ResNets (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016), WRN-d-k for 32x32 inputs.

Pre-activation BasicBlocks (BN-ReLU-conv3x3, optional dropout, BN-ReLU-conv3x3), three stages of ``(d - 4) / 6``
blocks with ``16k, 32k, 64k`` channels, 1x1 convolution shortcuts (no BN) where the shape changes, a final BN-ReLU,
global average pooling and one linear classifier. State-dict keys follow the KD community's (CRD / RepDistiller)
names (``block1.layer.0.conv1``, ``convShortcut``, ``bn1``, ``fc``), so its checkpoints can be loaded with
``load_weights`` (not verified against a downloaded file).

Parameter counts (10 / 100 classes), computed from this implementation:

=========  ==========  ===========  ============
name       10 classes  100 classes  num_features
=========  ==========  ===========  ============
wrn_16_1   175,066     180,916      64
wrn_16_2   691,674     703,284      128
wrn_40_1   563,930     569,780      64
wrn_40_2   2,243,546   2,255,156    128
wrn_28_10  36,479,194  36,536,884   640
=========  ==========  ===========  ============
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_advkd.models._base import ClassifierNet, check_sizes, init_conv_bn
from lightning_advkd.models._registry import ModelCfg, register_model

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3, dropout, BN-ReLU-conv3x3; 1x1 conv shortcut when the shape changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate
        # camelCase to keep the community's state-dict key.
        self.convShortcut: nn.Conv2d | None = None
        if stride != 1 or in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Two pre-activated 3x3 convolutions (dropout between them in training) added to the (projected) shortcut."""
        preact = F.relu(self.bn1(x))
        # With a projection the shortcut starts from the pre-activated input, as in the paper's code.
        shortcut = x if self.convShortcut is None else self.convShortcut(preact)
        out = F.relu(self.bn2(self.conv1(preact)), inplace=True)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class _WideStage(nn.Module):
    """A stage of blocks; a module of its own only to keep the ``blockN.layer.M`` checkpoint keys."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(n)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(ClassifierNet):
    """WRN-depth-widen_factor for 32x32 inputs.

    Args:
        depth: Number of weighted layers, ``6n + 4`` (16, 28, 40, ...).
        widen_factor: Width multiplier ``k`` of the three stages (16k, 32k, 64k channels).
        num_classes: Number of classes.
        in_chans: Number of input channels.
        drop_rate: Dropout probability between the two convolutions of each block (the paper uses 0.3 for some
            runs; 0 by default, as in the KD community's recipe).

    Raises:
        ValueError: If the depth is not ``6n + 4``, or a size or the dropout rate is out of range.

    Example:
        >>> import torch
        >>> model = WideResNet(depth=16, widen_factor=2, num_classes=100)
        >>> model(torch.zeros(2, 3, 32, 32)).shape, model.num_features
        (torch.Size([2, 100]), 128)
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg(input_size=(3, 32, 32), num_classes=10)

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 1,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_sizes(num_classes=num_classes, in_chans=in_chans, widen_factor=widen_factor)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 28, 40, ...), got {depth}.")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}.")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, widths[3]
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        self.block1 = _WideStage(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = _WideStage(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = _WideStage(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_conv_bn(self)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map after the final BN-ReLU, ``(N, num_features, H/4, W/4)``."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.relu(self.bn1(x), inplace=True)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling, then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)


@register_model
def wrn_16_1(**kwargs: Any) -> WideResNet:
    """WRN-16-1."""
    return WideResNet(depth=16, widen_factor=1, **kwargs)


@register_model
def wrn_16_2(**kwargs: Any) -> WideResNet:
    """WRN-16-2, 0.70 M parameters: the community's student of WRN-40-2."""
    return WideResNet(depth=16, widen_factor=2, **kwargs)


@register_model
def wrn_40_1(**kwargs: Any) -> WideResNet:
    """WRN-40-1."""
    return WideResNet(depth=40, widen_factor=1, **kwargs)


@register_model
def wrn_40_2(**kwargs: Any) -> WideResNet:
    """WRN-40-2, 2.2 M parameters: the community's teacher."""
    return WideResNet(depth=40, widen_factor=2, **kwargs)


@register_model
def wrn_28_10(**kwargs: Any) -> WideResNet:
    """WRN-28-10, 36.5 M parameters (slow on CPU)."""
    return WideResNet(depth=28, widen_factor=10, **kwargs)
