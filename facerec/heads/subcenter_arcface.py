"""Sub-center ArcFace: K sub-centres per class (Deng et al., ECCV 2020)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from facerec.heads.arcface import ArcFaceHead
from facerec.heads.checks import check_range
from facerec.heads.registry import register_head


@register_head("subcenter_arcface")
class SubCenterArcFaceHead(ArcFaceHead):
    """ArcFace on ``cos θ_{i,j} = max_k cos(x_i, w_{j,k})`` over K sub-centres per class.

    ``weight`` has shape ``(C·K, E)``, not ``(C, E)``: row ``j·K + k`` is sub-centre k of class j
    (``weight.view(C, K, E)`` groups them). The paper's optional second stage (dropping
    non-dominant sub-centres and noisy samples) is not part of the head.

    Args:
        embedding_size: E.
        num_classes: C.
        subcenters: K, sub-centres per class (default 3).
        **arcface: :class:`~facerec.heads.arcface.ArcFaceHead`'s ``scale``, ``margin``, ``easy_margin``.
    """

    def __init__(self, embedding_size: int, num_classes: int, subcenters: int = 3, **arcface: Any) -> None:
        super().__init__(embedding_size, num_classes, **arcface)
        check_range("subcenters", subcenters, 1)
        self.subcenters = subcenters
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def class_cosines(self, embeddings: Tensor, scale: float = 1.0, weight: Tensor | None = None) -> Tensor:
        """``scale`` × cosine to the closest sub-centre of each class, (B, C), for (B, E) embeddings.

        ``weight`` (optional) holds whole classes (K consecutive rows each), as ``self.weight`` does.
        """
        cos = super().class_cosines(embeddings, scale, weight)
        return cos.view(cos.shape[0], -1, self.subcenters).max(dim=2).values
