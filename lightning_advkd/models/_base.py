"""The interface every architecture of ours shares (after timm's ``forward_features`` / ``forward_head`` split)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from lightning_advkd.models._registry import ModelCfg

__all__ = ["ClassifierNet", "check_sizes", "init_conv_bn"]


class ClassifierNet(nn.Module):
    """Base class of our models: a backbone, a pooled feature vector, and a final ``nn.Linear`` classifier.

    Subclasses implement :meth:`forward_features` and :meth:`forward_head`, set ``num_classes``, ``in_chans`` and
    ``num_features``, and register their final ``nn.Linear`` classifier **last** among their ``nn.Linear`` modules:
    the distillation module's default feature tap, the feature ``f(x)`` the discriminator judges, is the input of the
    last ``nn.Linear`` of ``named_modules()``, and it must equal ``forward_head(forward_features(x), pre_logits=True)``.
    No dropout sits between that vector and the classifier, so the tap sees the same vector in training and evaluation.

    Attributes:
        default_cfg: The architecture's default input size and number of classes (a class attribute).
        num_classes: Number of classes (width of the logits).
        num_features: Width of the pooled penultimate vector, the classifier's ``in_features``.
        in_chans: Number of input channels.
    """

    default_cfg: ClassVar[ModelCfg] = ModelCfg()
    num_classes: int
    num_features: int
    in_chans: int

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone: the last feature map (or the penultimate activations for models without one)."""
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the output of :meth:`forward_features`; return the pooled vector if ``pre_logits``, else logits."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits, ``forward_head(forward_features(x))``."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        """The final classifier: the last ``nn.Linear`` registered in the model."""
        linears = [module for module in self.modules() if isinstance(module, nn.Linear)]
        return linears[-1]


def init_conv_bn(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions and unit-scale BatchNorm, the usual initialisation of CIFAR ResNets."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def check_sizes(**sizes: int) -> None:
    """Fail at construction, naming the argument, if a size such as ``num_classes`` or ``in_chans`` is not >= 1."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
