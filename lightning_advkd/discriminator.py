"""Discriminators that tell teacher features from student features."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLPDiscriminator(nn.Module):
    """The MLP discriminator of ANC: ``in -> 128 -> 256 -> 128 -> 1`` with ReLU and a raw logit out.

    Args:
        in_features: width of the feature vectors it judges (the teacher's feature width).
        hidden: widths of the hidden layers.
        dropout: dropout probability after each hidden activation (``0`` disables it); the "dropout inside D"
            alternative of the paper's regularizer ablation.

    Example:
        >>> import torch
        >>> d = MLPDiscriminator(64)
        >>> d(torch.randn(5, 64)).shape
        torch.Size([5, 1])
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (128, 256, 128), dropout: float = 0.0) -> None:
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
            layers += [nn.Linear(width, out), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """Return one raw logit per feature vector, shape ``(N, 1)``; positive means "teacher"."""
        return self.net(features)
