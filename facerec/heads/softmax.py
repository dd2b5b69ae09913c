"""Plain softmax head: linear classifier + cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.heads.base import Head, HeadOutput
from facerec.heads.numerics import full_precision
from facerec.heads.registry import register_head


@register_head("softmax")
class SoftmaxHead(Head):
    """Linear classifier ``x @ W.T + b``, then cross-entropy.

    Args:
        embedding_size: E.
        num_classes: C.
        bias: Whether the classifier has a bias.
    """

    def __init__(self, embedding_size: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_size, num_classes, bias=bias)

    @property
    def weight(self) -> Tensor:
        """Class weights, (C, E)."""
        return self.classifier.weight

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """CE of logits (B, C) for embeddings (B, E) and labels (B,), in full precision."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = full_precision(embeddings)
            bias = None if self.classifier.bias is None else self.classifier.bias.to(x.dtype)
            logits = F.linear(x, self.classifier.weight.to(x.dtype), bias)
            return HeadOutput(loss=F.cross_entropy(logits, labels), logits=logits)
