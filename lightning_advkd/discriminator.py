"""Discriminators that tell teacher features from student features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm


class MLPDiscriminator(nn.Module):
    """The MLP discriminator of ANC: ``in -> 128 -> 256 -> 128 -> 1`` with ReLU and a raw logit out.

    Args:
        in_features: width of the feature vectors it judges (the teacher's feature width).
        hidden: widths of the hidden layers.
        dropout: dropout probability after each hidden activation (``0`` disables it); the "dropout inside D"
            alternative of the paper's regularizer ablation.
        spectral_norm: constrain every linear layer to spectral norm 1 (Miyato et al., 2018), which bounds the
            discriminator's Lipschitz constant; usually paired with the hinge loss (``gan_loss="hinge"``).

    Example:
        >>> import torch
        >>> d = MLPDiscriminator(64)
        >>> d(torch.randn(5, 64)).shape
        torch.Size([5, 1])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128, 256, 128),
        dropout: float = 0.0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_features <= 0:
            raise ValueError(f"in_features must be positive, got {in_features}")
        if any(width <= 0 for width in hidden):
            raise ValueError(f"hidden widths must be positive, got {tuple(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_features = in_features
        layers: list[nn.Module] = []
        width = in_features
        for out in hidden:
            layers += [_linear(width, out, spectral_norm), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        layers.append(_linear(width, 1, spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """Return one raw logit per feature vector, shape ``(N, 1)``; positive means "teacher"."""
        return self.net(features)


#: Layers that normalize over the batch: fed one batch of teacher and student features together, they would mix the two.
BATCH_STATISTIC_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def judge(discriminator: nn.Module, *batches: Tensor) -> list[Tensor]:
    """The discriminator's logits on each of ``batches``, from one forward pass over them all.

    One pass over the stacked batches (teacher, student, adversarial samples) pays a small discriminator's fixed
    per-call cost (operator dispatch, autograd nodes: most of its time) once. A discriminator with BatchNorm judges
    each batch in its own pass, so its batch statistics never mix teacher and student features.

    Example:
        >>> d = MLPDiscriminator(8)
        >>> real, fake = torch.randn(4, 8), torch.randn(3, 8)
        >>> real_logits, fake_logits = judge(d, real, fake)
        >>> fake_logits.shape, torch.allclose(real_logits, d(real), atol=1e-6)
        (torch.Size([3, 1]), True)
    """
    if any(isinstance(layer, BATCH_STATISTIC_LAYERS) for layer in discriminator.modules()):
        return [discriminator(batch) for batch in batches]
    return list(discriminator(torch.cat(batches)).split([len(batch) for batch in batches]))


def _linear(in_features: int, out_features: int, spectral_norm: bool) -> nn.Module:
    layer = nn.Linear(in_features, out_features)
    return add_spectral_norm(layer) if spectral_norm else layer
