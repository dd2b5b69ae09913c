"""ArcFace + center loss."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from facerec.heads.arcface import ArcFaceHead
from facerec.heads.center_loss import CenterLoss, CenterLossMixin
from facerec.heads.numerics import full_precision
from facerec.heads.registry import register_head

CENTER_ON = ("normalized", "raw")


@register_head("arcface_center")
class ArcFaceCenterHead(CenterLossMixin, ArcFaceHead):
    """ArcFace + ``λ·½·mean_i ‖f_i − c_{y_i}‖²``.

    ``center_on="normalized"`` (default): ``f_i = x_i/‖x_i‖``, matching ArcFace's unit hypersphere
    (loss ≤ 4 per sample). ``"raw"``: ``f_i = x_i`` as in Wen et al.; this also shrinks feature norms.

    Args:
        embedding_size: E.
        num_classes: C.
        center_weight: λ (default 0.003).
        alpha: α of the paper's centre update (default 0.5).
        update: ``"paper"`` (buffers, updated after each step) or ``"sgd"`` (parameters).
        center_lr: Centre learning rate for ``update="sgd"``; ``None`` means ``α/λ``.
        center_on: ``"normalized"`` or ``"raw"`` embeddings.
        **arcface: :class:`~facerec.heads.arcface.ArcFaceHead`'s ``scale``, ``margin``, ``easy_margin``.

    Raises:
        ValueError: If ``center_on`` is not one of ``"normalized"``, ``"raw"``.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        center_weight: float = 0.003,
        alpha: float = 0.5,
        update: str = "paper",
        center_lr: float | None = None,
        center_on: str = "normalized",
        **arcface: Any,
    ) -> None:
        if center_on not in CENTER_ON:
            raise ValueError(f"unknown center_on {center_on!r}; valid: {', '.join(CENTER_ON)}")
        super().__init__(embedding_size, num_classes, **arcface)
        self.center_on = center_on
        self.center_loss = CenterLoss(num_classes, embedding_size, center_weight, alpha, update, center_lr)

    def center_features(self, embeddings: Tensor) -> Tensor:
        """(B, E) → (B, E) ``x/‖x‖`` (``"normalized"``) or ``x`` (``"raw"``), full precision."""
        features = full_precision(embeddings)
        return F.normalize(features, dim=1) if self.center_on == "normalized" else features
