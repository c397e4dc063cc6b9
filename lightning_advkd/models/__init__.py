"""Architecture registry: ``create_model("resnet20", num_classes=100)``, ``list_models("wrn_*")``, ``load_weights``.

Every model of ours (see :func:`list_models`) shares one interface: ``forward_features(x)``, ``forward_head(x,
pre_logits=False)``, ``num_classes``, ``num_features``, and a final ``nn.Linear`` classifier that is the last
``nn.Linear`` of the model, whose input is the pooled feature ``f(x)`` the adversarial distillation works on.
torchvision (``"tv_<name>"``) and timm (``"timm.<name>"``) models are reachable by prefix.
"""

from lightning_advkd.models import (  # noqa: F401  (imported so that their models register)
    cifar_resnet,
    lenet,
    mobilenetv2,
    nin,
    shufflenetv2,
    vgg,
    wide_resnet,
)
from lightning_advkd.models._base import ClassifierNet
from lightning_advkd.models._checkpoint import CheckpointMismatchError, LoadedWeights, load_weights
from lightning_advkd.models._registry import (
    ModelCfg,
    ModelEntry,
    UnknownModelError,
    create_model,
    get_model_entry,
    is_model,
    list_models,
    register_model,
)

__all__ = [
    "CheckpointMismatchError",
    "ClassifierNet",
    "LoadedWeights",
    "ModelCfg",
    "ModelEntry",
    "UnknownModelError",
    "create_model",
    "get_model_entry",
    "is_model",
    "list_models",
    "load_weights",
    "register_model",
]
