"""LeNet-5 (LeCun et al., 1998): the ANC paper's Fashion-MNIST student class.

conv5x5(6) - maxpool - conv5x5(16) - maxpool - fc(120) - fc(84) - fc(num_classes), with ReLU activations and max
pooling in place of the original's scaled tanh and trainable sub-sampling. The first convolution pads by 2, so a 28x28
image (MNIST / Fashion-MNIST) gives the classic 5x5x16 map, as the 32x32 inputs of the original did; an adaptive
average pooling to 5x5 before the fully-connected layers lets 32x32 (and other) inputs through as well.

Parameter counts: 61,706 (1 input channel, 10 classes), 69,356 (1 channel, 100 classes), 62,006 (3 channels,
10 classes). ``num_features`` is 84.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_advkd.models._base import ClassifierNet, check_sizes
from lightning_advkd.models._registry import ModelCfg, register_model

__all__ = ["LeNet5"]


class LeNet5(ClassifierNet):
    """LeNet-5 with ReLU and max pooling, for 28x28 or 32x32 inputs.

    :meth:`forward_features` returns the 16x5x5 convolutional map; :meth:`forward_head` flattens it and applies the
    two hidden fully-connected layers, so ``pre_logits`` is the 84-wide activation feeding the last ``nn.Linear``.

    Args:
        num_classes: Number of classes.
        in_chans: Number of input channels (1 for Fashion-MNIST).

    Raises:
        ValueError: If a size is not positive.

    Example:
        >>> import torch
        >>> model = LeNet5()
        >>> model(torch.zeros(2, 1, 28, 28)).shape, model.num_features
        (torch.Size([2, 10]), 84)
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg(input_size=(1, 28, 28), num_classes=10)

    def __init__(self, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        check_sizes(num_classes=num_classes, in_chans=in_chans)
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, 84
        self.conv1 = nn.Conv2d(in_chans, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.AdaptiveAvgPool2d((5, 5))
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The second convolution's pooled map, ``(N, 16, 5, 5)``."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.pool(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The two hidden fully-connected layers, then the classifier unless ``pre_logits``."""
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = F.relu(self.fc2(x))
        return x if pre_logits else self.fc3(x)


@register_model(default_cfg=LeNet5.default_cfg)
def lenet5(**kwargs: Any) -> LeNet5:
    """LeNet-5 (ReLU, max pooling), 1x28x28 inputs by default: the Fashion-MNIST student."""
    return LeNet5(**kwargs)
