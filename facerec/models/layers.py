"""Embedding layers shared by face nets and necks: :class:`OutputLayer` (IResNet), :class:`GDC` (MobileFaceNet).

Each ``insightface_keys`` maps insightface ``backbone.pth`` key prefixes to the layer's parameter names."""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor, nn

__all__ = ["GDC", "OutputLayer"]


class OutputLayer(nn.Module):
    """insightface's output layer on the un-pooled map: BN → Dropout → flatten → FC → BN1d (scale frozen at 1).

    Args:
        feature_shape: Per-sample input shape, (C, H, W) or (N, C).
        embedding_size: E, the output width.
        dropout: Dropout probability before the FC layer.
    """

    insightface_keys: ClassVar[dict[str, str]] = {"bn2.": "bn.", "fc.": "fc.", "features.": "features."}

    def __init__(self, feature_shape: tuple[int, ...], embedding_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.tokens = len(feature_shape) == 2
        channels = feature_shape[-1] if self.tokens else feature_shape[0]
        self.bn = nn.BatchNorm1d(channels, eps=1e-5) if self.tokens else nn.BatchNorm2d(channels, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(math.prod(feature_shape), embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) or (B, N, C) → (B, E)."""
        x = x.transpose(1, 2) if self.tokens else x  # BN normalises dim 1: channels first
        x = self.dropout(self.bn(x))
        x = x.transpose(1, 2) if self.tokens else x
        return self.features(self.fc(x.flatten(1)))


class GDC(nn.Module):
    """Global depthwise conv: (H, W)-kernel depthwise conv → BN → Dropout → FC (no bias) → BN1d.

    Args:
        feature_shape: Per-sample input shape, (C, H, W).
        embedding_size: E, the output width.
        dropout: Dropout probability before the FC layer.
    """

    insightface_keys: ClassVar[dict[str, str]] = {
        "features.layers.0.layers.0.": "conv.",
        "features.layers.0.layers.1.": "bn.",
        "features.layers.2.": "fc.",
        "features.layers.3.": "features.",
    }

    def __init__(self, feature_shape: tuple[int, ...], embedding_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        if len(feature_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} needs a (C, H, W) feature map, got per-sample shape {feature_shape}"
            )
        channels, height, width = feature_shape
        self.conv = nn.Conv2d(channels, channels, (height, width), groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, embedding_size, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, E)."""
        return self.features(self.fc(self.dropout(self.bn(self.conv(x)).flatten(1))))
