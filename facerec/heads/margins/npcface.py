"""NPCFace: negative-positive collaborative margins (Zeng et al., 2020, arXiv:2007.10172)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import Margin, MarginInput
from facerec.heads.margins.hard_negative import arc_target, cos_plus, hard_negatives
from facerec.heads.registry import register_margin


@register_margin("npcface")
class NPCFace(Margin):
    """Hard negatives ``s·(t·cos θ_j + α)``; target ``s·cos(θ_y + m'_i)``, ``m'_i = m0 + m1·mean hard cos θ_j``.

    A negative is hard where ``cos θ_j > cos(θ_y + m0)``. Each sample's positive margin grows with its
    hard negatives' mean cosine (no gradient; ``m0`` without hard negatives), summed over every rank's
    columns under Partial FC (over the sampled columns with r < 1). Past ``θ_y = π − m'`` the target uses
    ArcFace's monotonic fallback. Where FaceX-Zoo's code departs from the paper (the hard-negative threshold's
    margin, no margin where ``cos θ_y ≤ 0``) this follows the paper (``tests/heads/test_npcface.py``).

    Args:
        scale: s (default 64).
        m0: Base angular margin, also the hard-negative threshold (default 0.4).
        m1: Weight of the mean hard-negative cosine in the margin, in [0, m0] so ``m' ≥ 0`` (default 0.2).
        t: Slope on hard negatives, ≥ 1 (default 1.1).
        alpha: Shift on hard negatives, ≥ 0 (default 0.2).
    """

    def __init__(
        self, scale: float = 64.0, m0: float = 0.4, m1: float = 0.2, t: float = 1.1, alpha: float = 0.2
    ) -> None:
        super().__init__()
        check_range("margin.scale", scale, 0.0, low_open=True, high_open=True)
        check_range("margin.m0", m0, 0.0, math.pi / 2, high_open=True)
        check_range("margin.m1", m1, 0.0, m0)
        check_range("margin.t", t, 1.0, high_open=True)
        check_range("margin.alpha", alpha, 0.0, high_open=True)
        self.scale = scale
        self.m0, self.m1, self.t, self.alpha = m0, m1, t, alpha

    def positive_margin(self, inputs: MarginInput, hard: Tensor) -> Tensor:
        """``m'`` (B,), no gradient, from the hard-negative mask (B, n), over every rank's columns."""
        with torch.no_grad():
            rows = len(hard)
            sums = inputs.columns.sum(torch.cat([torch.where(hard, inputs.cos, 0.0), hard.to(inputs.cos.dtype)]))
            return self.m0 + self.m1 * sums[:rows] / sums[rows:].clamp_min(1.0)

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) logits."""
        hard = hard_negatives(inputs, cos_plus(inputs.target_cos(), self.m0))
        cos = inputs.cos
        logits = torch.where(hard, self.t * cos + self.alpha, cos)
        target = arc_target(inputs.target(cos), self.positive_margin(inputs, hard))
        return self.scale * inputs.with_target(logits, target)
