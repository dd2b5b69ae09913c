"""Circle loss, classification form (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
Optimization", CVPR 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import Margin, MarginInput
from facerec.heads.registry import register_margin


@register_margin("circleloss")
class CircleLoss(Margin):
    """Target logit ``γ·α_p·(cos θ_y − Δ_p)``, others ``γ·α_n·(cos θ_j − Δ_n)``; with cross-entropy, circle loss.

    ``α_p = max(O_p − cos θ_y, 0)``, ``α_n = max(cos θ_j − O_n, 0)`` are detached (the paper treats them
    as constants in the gradient), ``O_p = 1 + m``, ``O_n = −m``, ``Δ_p = 1 − m``, ``Δ_n = m``: each
    similarity is weighted by how far it is from its optimum, and the boundary between the target and a
    class j is the circle ``cos² θ_j + (cos θ_y − 1)² = 2m²``. Each logit depends on its own cosine only,
    so Partial FC (any rank's columns, any sample rate) needs no reduction.

    Args:
        scale: γ > 0 (default 256).
        margin: m, the relaxation, in [0, 0.5) so that ``Δ_n < Δ_p`` (default 0.25).
    """

    def __init__(self, scale: float = 256.0, margin: float = 0.25) -> None:
        super().__init__()
        check_range("margin.scale", scale, 0.0, low_open=True, high_open=True)
        check_range("margin.margin", margin, 0.0, 0.5, high_open=True)
        self.scale = scale
        self.margin = margin

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) logits."""
        cos, m = inputs.cos, self.margin
        alpha_p = (1.0 + m - cos.detach()).clamp_min(0.0)
        alpha_n = (cos.detach() + m).clamp_min(0.0)
        positive = alpha_p * (cos - (1.0 - m))
        negative = alpha_n * (cos - m)
        return self.scale * torch.where(inputs.target_mask(), positive, negative)
