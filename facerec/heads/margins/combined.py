"""Combined margin ``cos(m1·θ + m2) − m3`` (insightface; SphereFace, ArcFace, CosFace as special cases)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import TargetMargin
from facerec.heads.numerics import safe_acos
from facerec.heads.registry import register_margin


@register_margin("combined")
class CombinedMargin(TargetMargin):
    """Target logit ``s·(cos(m1·θ_y + m2) − m3)``.

    ``m1 = 1, m3 = 0``: ArcFace; ``m1 = 1, m2 = 0``: CosFace; ``m2 = m3 = 0``: SphereFace. Past
    ``θ_max = (π − m2)/m1`` the target logit is ``cos θ − m3 − p``, ``p = max(m2·sin m2, 1 + cos θ_max)``:
    insightface's ``mm`` when that keeps it monotonic (so ``m1 = 1, m3 = 0`` equals
    :class:`~facerec.heads.arcface.ArcFaceHead` exactly), else the smallest constant that does. The
    target logit is non-increasing in θ on ``[0, π]`` for every valid combination.

    Args:
        scale: s (default 64).
        m1: Multiplicative angular margin, > 0 (default 1.0).
        m2: Additive angular margin in radians, in [0, π) (default 0.3).
        m3: Additive cosine margin (default 0.2).

    Raises:
        ValueError: If ``m1 <= 0``, ``m2`` is outside ``[0, π)`` or ``m3`` outside ``[0, 1)``.
    """

    def __init__(
        self,
        scale: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.3,
        m3: float = 0.2,
    ) -> None:
        super().__init__(scale)
        check_range("margin.m1", m1, 0.0, low_open=True)
        check_range("margin.m2", m2, 0.0, math.pi, high_open=True)
        check_range("margin.m3", m3, 0.0, 1.0, high_open=True)
        self.m1, self.m2, self.m3 = m1, m2, m3
        self.theta_max = (math.pi - m2) / m1
        self.fallback_penalty = max(m2 * math.sin(m2), 1.0 + math.cos(min(self.theta_max, math.pi)))

    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """``cos(m1·θ + m2) − m3`` (B,), monotonic fallback past ``θ_max``."""
        theta = safe_acos(cos_target)
        with_margin = torch.cos(self.m1 * theta + self.m2) - self.m3
        fallback = cos_target - self.m3 - self.fallback_penalty
        return torch.where(theta >= self.theta_max, fallback, with_margin)
