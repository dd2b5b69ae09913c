"""Softmax + center loss (Wen et al., ECCV 2016)."""

from __future__ import annotations

from torch import Tensor

from facerec.heads.base import HeadOutput
from facerec.heads.center_loss import CenterLoss, CenterLossMixin
from facerec.heads.registry import register_head
from facerec.heads.softmax import SoftmaxHead


@register_head("center")
class CenterHead(CenterLossMixin, SoftmaxHead):
    """Linear classifier + CE + ``λ·½·mean_i ‖x_i − c_{y_i}‖²`` on raw embeddings.

    Centres: ``center_loss.centers`` (C, E); ``weight``: the classifier's (C, E).

    Args:
        embedding_size: E.
        num_classes: C.
        bias: Whether the classifier has a bias.
        center_weight: λ (default 0.003).
        alpha: α of the paper's centre update (default 0.5).
        update: ``"paper"`` (buffers, updated after each step) or ``"sgd"`` (parameters).
        center_lr: Centre learning rate for ``update="sgd"``; ``None`` means ``α/λ``.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        bias: bool = True,
        center_weight: float = 0.003,
        alpha: float = 0.5,
        update: str = "paper",
        center_lr: float | None = None,
    ) -> None:
        super().__init__(embedding_size, num_classes, bias)
        self.center_loss = CenterLoss(num_classes, embedding_size, center_weight, alpha, update, center_lr)

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """CE + center loss for embeddings (B, E) and labels (B,); logits (B, C)."""
        return self.with_center_loss(super().forward(embeddings, labels), embeddings, labels)
