"""ArcFace: additive angular margin (Deng et al., CVPR 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import TargetMargin
from facerec.heads.registry import register_margin


@register_margin("arcface")
class ArcFace(TargetMargin):
    """Target logit ``s·cos(θ_y + m)``.

    Where ``θ_y + m > π`` it uses the monotonic fallback ``cos θ_y − m·sin m`` (insightface's
    ``th``/``mm``). With ``easy_margin`` the margin applies only where ``cos θ_y > 0``.

    Args:
        scale: s (default 64).
        margin: m in radians (default 0.5).
        easy_margin: Apply the margin only to positive target cosines.
    """

    def __init__(
        self,
        scale: float = 64.0,
        margin: float = 0.5,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(scale)
        check_range("margin.margin", margin, 0.0, math.pi / 2, high_open=True)
        self.margin = margin
        self.easy_margin = easy_margin

    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """``cos(θ + m)`` (B,), fallback past ``π − m``; finite gradients at ``cos = ±1``."""
        sin_target = torch.sqrt((1.0 - cos_target * cos_target).clamp_min(1e-12))
        with_margin = cos_target * math.cos(self.margin) - sin_target * math.sin(self.margin)
        if self.easy_margin:
            return torch.where(cos_target > 0, with_margin, cos_target)
        past_pi = cos_target <= math.cos(math.pi - self.margin)
        return torch.where(past_pi, cos_target - math.sin(self.margin) * self.margin, with_margin)
