"""Network in Network (Lin, Chen & Yan, ICLR 2014): the ANC paper's Fashion-MNIST teacher class.

Three mlpconv blocks as in the paper's CIFAR-10 network (5x5 conv 192 -> 1x1 160 -> 1x1 96; 5x5 conv 192 -> 1x1 192 ->
1x1 192; 3x3 conv 192 -> 1x1 192), each convolution followed by BatchNorm and ReLU, 3x3 stride-2 pooling (max, then
average) and dropout after the first two blocks.

**Classifier.** The paper ends with a 1x1 convolution to ``num_classes`` channels and global average pooling. Here
the third block stops at 192 channels and global average pooling is followed by ``nn.Linear(192, num_classes)``:
the same linear map applied after the pooling instead of before (equal up to the paper's ReLU on the class maps),
which gives the network the final ``nn.Linear`` our feature tap and ``forward_head(pre_logits=True)`` rely on.

Parameter counts: 958,794 (1 input channel, 10 classes), 976,164 (1 channel, 100 classes), 968,394 (3 channels,
10 classes). ``num_features`` is 192.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from lightning_advkd.models._base import ClassifierNet, check_sizes, init_conv_bn
from lightning_advkd.models._registry import ModelCfg, register_model

__all__ = ["NIN"]


def _mlpconv(in_chans: int, widths: tuple[int, ...], kernel_size: int) -> list[nn.Module]:
    """A k x k convolution followed by 1x1 convolutions (the "micro network"), each with BN and ReLU."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        k = kernel_size if i == 0 else 1
        layers += [nn.Conv2d(in_chans, width, k, padding=k // 2, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        in_chans = width
    return layers


class NIN(ClassifierNet):
    """Network in Network with BatchNorm, global average pooling and a linear classifier.

    Args:
        num_classes: Number of classes.
        in_chans: Number of input channels (1 for Fashion-MNIST).
        drop_rate: Dropout probability after the first two mlpconv blocks (0.5 in the paper).

    Raises:
        ValueError: If a size is not positive or ``drop_rate`` is outside ``[0, 1)``.

    Example:
        >>> import torch
        >>> model = NIN()
        >>> model(torch.zeros(2, 1, 28, 28)).shape, model.num_features
        (torch.Size([2, 10]), 192)
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg(input_size=(1, 28, 28), num_classes=10)

    def __init__(self, num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.5) -> None:
        super().__init__()
        check_sizes(num_classes=num_classes, in_chans=in_chans)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}.")
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 192
        self.features = nn.Sequential(
            *_mlpconv(in_chans, (192, 160, 96), kernel_size=5),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Dropout(drop_rate),
            *_mlpconv(96, (192, 192, 192), kernel_size=5),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
            nn.Dropout(drop_rate),
            *_mlpconv(192, (192, 192), kernel_size=3),
        )
        self.fc = nn.Linear(192, num_classes)
        init_conv_bn(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """The third mlpconv block's feature map, ``(N, 192, H/4, W/4)``."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling, then the classifier unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)


@register_model(default_cfg=NIN.default_cfg)
def nin(**kwargs: Any) -> NIN:
    """Network in Network with BN, GAP + linear head, 1x28x28 inputs by default: the Fashion-MNIST teacher."""
    return NIN(**kwargs)
