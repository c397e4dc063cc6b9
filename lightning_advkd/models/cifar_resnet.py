"""CIFAR ResNets: the distillation community's set and the pre-activation ResNet-164 teacher of the ANC paper.

The community's set follows the CRD / RepDistiller naming.

``resnet{8,14,20,32,44,56,110}`` and ``resnet{8,32}x4`` follow He et al. (CVPR 2016, Sec. 4.2) with the variant the
KD community trains: three stages of BasicBlocks on 32x32, 16x16 and 8x8 maps, 1x1-convolution + BN shortcuts where
the shape changes (option B), global average pooling, one linear classifier. State-dict keys follow that community's
names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``), so its checkpoints can be loaded
with ``load_weights`` (not verified against a downloaded file: this project works offline).

``resnet164`` is the pre-activation bottleneck network of He et al., "Identity Mappings in Deep Residual Networks"
(ECCV 2016): 18 bottleneck blocks per stage, bottleneck widths 16/32/64 (outputs 64/128/256), BN-ReLU before each
convolution, projection shortcuts without BN, and a final BN-ReLU before pooling.

Parameter counts (10 / 100 classes), computed from this implementation:

==============  ============  ============  ============
name            10 classes    100 classes   num_features
==============  ============  ============  ============
resnet8         78,042        83,892        64
resnet14        175,258       181,108       64
resnet20        272,474       278,324       64
resnet32        466,906       472,756       64
resnet44        661,338       667,188       64
resnet56        855,770       861,620       64
resnet110       1,730,714     1,736,564     64
resnet8x4       1,210,410     1,233,540     256
resnet32x4      7,410,730     7,433,860     256
resnet164       1,703,258     1,726,388     256
==============  ============  ============  ============
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_advkd.models._base import ClassifierNet, check_sizes, init_conv_bn
from lightning_advkd.models._registry import ModelCfg, register_model

__all__ = ["BasicBlock", "CifarResNet", "PreActBottleneck", "PreActResNet"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN, post-activation, 1x1 conv + BN shortcut when the shape changes."""

    expansion: ClassVar[int] = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, same spatial size unless ``stride > 1``."""
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut, inplace=True)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (BN-ReLU-conv x3: 1x1, 3x3, 1x1 with 4x expansion), He et al. ECCV 2016."""

    expansion: ClassVar[int] = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Pre-activated 1x1, 3x3 and 1x1 convolutions plus the (projected) shortcut, ``expansion * planes`` wide."""
        preact = F.relu(self.bn1(x), inplace=True)
        # The projection shortcut takes the pre-activated input, as in the paper's Fig. 1(b) / fb.resnet.torch.
        shortcut = x if self.downsample is None else self.downsample(preact)
        out = self.conv1(preact)
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        return out + shortcut


def _make_stage(block: type[BasicBlock | PreActBottleneck], in_planes: int, planes: int, n: int, stride: int):
    blocks = [block(in_planes, planes, stride)]
    blocks += [block(planes * block.expansion, planes) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class CifarResNet(ClassifierNet):
    """CIFAR ResNet with BasicBlocks (depth = 6n + 2), as used throughout the CIFAR knowledge-distillation literature.

    Args:
        depth: Number of weighted layers, ``6n + 2`` (8, 14, 20, 32, 44, 56, 110, ...).
        widths: Channels of the stem and of the three stages, ``(16, 16, 32, 64)`` or ``(32, 64, 128, 256)`` for
            the "x4" variants.
        num_classes: Number of classes.
        in_chans: Number of input channels.

    Raises:
        ValueError: If the depth is not ``6n + 2`` or a size is not positive.

    Example:
        >>> import torch
        >>> model = CifarResNet(depth=20)
        >>> model(torch.zeros(2, 3, 32, 32)).shape, model.num_features
        (torch.Size([2, 10]), 64)
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg(input_size=(3, 32, 32), num_classes=10)

    def __init__(
        self,
        depth: int = 20,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(num_classes=num_classes, in_chans=in_chans)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CifarResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}.")
        if len(widths) != 4:
            raise ValueError(f"widths must give the stem and three stage widths (4 ints), got {widths}.")
        n = (depth - 2) // 6
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, widths[3]
        self.conv1 = _conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = _make_stage(BasicBlock, widths[0], widths[1], n, stride=1)
        self.layer2 = _make_stage(BasicBlock, widths[1], widths[2], n, stride=2)
        self.layer3 = _make_stage(BasicBlock, widths[2], widths[3], n, stride=2)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_conv_bn(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map, ``(N, num_features, H/4, W/4)``."""
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling, then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)


class PreActResNet(ClassifierNet):
    """Pre-activation bottleneck ResNet for CIFAR (depth = 9n + 2), He et al. "Identity Mappings", ECCV 2016.

    Args:
        depth: Number of weighted layers, ``9n + 2`` (164 for the paper's ResNet-164, 1001 for its largest).
        widths: Stem channels and the bottleneck width of each stage; stage outputs are 4x the bottleneck widths.
        num_classes: Number of classes.
        in_chans: Number of input channels.

    Raises:
        ValueError: If the depth is not ``9n + 2`` or a size is not positive.
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg(input_size=(3, 32, 32), num_classes=10)

    def __init__(
        self,
        depth: int = 164,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(num_classes=num_classes, in_chans=in_chans)
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(f"PreActResNet depth must be 9n + 2 with n >= 1 (11, 164, 1001, ...), got {depth}.")
        if len(widths) != 4:
            raise ValueError(f"widths must give the stem and three bottleneck widths (4 ints), got {widths}.")
        n = (depth - 2) // 9
        expansion = PreActBottleneck.expansion
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, widths[3] * expansion
        self.conv1 = _conv3x3(in_chans, widths[0])
        self.layer1 = _make_stage(PreActBottleneck, widths[0], widths[1], n, stride=1)
        self.layer2 = _make_stage(PreActBottleneck, widths[1] * expansion, widths[2], n, stride=2)
        self.layer3 = _make_stage(PreActBottleneck, widths[2] * expansion, widths[3], n, stride=2)
        self.bn_final = nn.BatchNorm2d(self.num_features)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_conv_bn(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map after the final BN-ReLU, ``(N, num_features, H/4, W/4)``."""
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return F.relu(self.bn_final(x), inplace=True)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling, then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)


@register_model
def resnet8(**kwargs: Any) -> CifarResNet:
    """ResNet-8 (widths 16/32/64)."""
    return CifarResNet(depth=8, widths=(16, 16, 32, 64), **kwargs)


@register_model
def resnet14(**kwargs: Any) -> CifarResNet:
    """ResNet-14 (widths 16/32/64)."""
    return CifarResNet(depth=14, widths=(16, 16, 32, 64), **kwargs)


@register_model
def resnet20(**kwargs: Any) -> CifarResNet:
    """ResNet-20 (widths 16/32/64), 0.27 M parameters: the ANC paper's CIFAR/SVHN student."""
    return CifarResNet(depth=20, widths=(16, 16, 32, 64), **kwargs)


@register_model
def resnet32(**kwargs: Any) -> CifarResNet:
    """ResNet-32 (widths 16/32/64)."""
    return CifarResNet(depth=32, widths=(16, 16, 32, 64), **kwargs)


@register_model
def resnet44(**kwargs: Any) -> CifarResNet:
    """ResNet-44 (widths 16/32/64)."""
    return CifarResNet(depth=44, widths=(16, 16, 32, 64), **kwargs)


@register_model
def resnet56(**kwargs: Any) -> CifarResNet:
    """ResNet-56 (widths 16/32/64), 0.86 M parameters."""
    return CifarResNet(depth=56, widths=(16, 16, 32, 64), **kwargs)


@register_model
def resnet110(**kwargs: Any) -> CifarResNet:
    """ResNet-110 (widths 16/32/64), 1.73 M parameters."""
    return CifarResNet(depth=110, widths=(16, 16, 32, 64), **kwargs)


@register_model
def resnet8x4(**kwargs: Any) -> CifarResNet:
    """ResNet-8x4: stem 32, stages 64/128/256 (the community's 4x-wide student)."""
    return CifarResNet(depth=8, widths=(32, 64, 128, 256), **kwargs)


@register_model
def resnet32x4(**kwargs: Any) -> CifarResNet:
    """ResNet-32x4: stem 32, stages 64/128/256 (the community's 4x-wide teacher), 7.4 M parameters."""
    return CifarResNet(depth=32, widths=(32, 64, 128, 256), **kwargs)


@register_model
def resnet164(**kwargs: Any) -> PreActResNet:
    """Pre-activation bottleneck ResNet-164, 1.7 M parameters: the ANC paper's CIFAR/SVHN teacher."""
    return PreActResNet(depth=164, widths=(16, 16, 32, 64), **kwargs)
