"""Sub-center ArcFace: K sub-centres per class (Deng et al., ECCV 2020)."""

from __future__ import annotations

from typing import Any

from facerec.heads.arcface import ArcFaceHead
from facerec.heads.checks import check_range
from facerec.heads.classifier import Classifier
from facerec.heads.registry import register_head


@register_head("subcenter_arcface")
class SubCenterArcFaceHead(ArcFaceHead):
    """ArcFace on ``cos θ_{i,j} = max_k cos(x_i, w_{j,k})`` over K sub-centres per class.

    ``weight`` is (C·K, E), row ``j·K + k`` sub-centre k of class j (``weight.view(C, K, E)``). The
    paper's second stage (dropping non-dominant sub-centres and noisy samples) is not implemented.

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
        self.classifier = Classifier(embedding_size, num_classes, rows_per_class=subcenters)
