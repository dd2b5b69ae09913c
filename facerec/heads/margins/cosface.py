"""CosFace: large margin cosine loss (Wang et al., CVPR 2018)."""

from __future__ import annotations

from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import TargetMargin
from facerec.heads.registry import register_margin


@register_margin("cosface")
class CosFace(TargetMargin):
    """Target logit ``s·(cos θ_y − m)``.

    Args:
        scale: s (default 64).
        margin: m in [0, 1) (default 0.35).
    """

    def __init__(self, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(scale)
        check_range("margin.margin", margin, 0.0, 1.0, high_open=True)
        self.margin = margin

    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """``cos θ − m``, (B,)."""
        return cos_target - self.margin
