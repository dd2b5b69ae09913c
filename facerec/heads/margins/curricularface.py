"""CurricularFace: adaptive curriculum learning loss (Huang et al., CVPR 2020)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import Margin, MarginInput
from facerec.heads.margins.hard_negative import arc_target, cos_plus, hard_negatives
from facerec.heads.registry import register_margin


@register_margin("curricularface")
class CurricularFace(Margin):
    """Target logit ``s·cos(θ_y + m)`` (ArcFace, with its fallback); hard negatives ``s·cos θ_j·(t + cos θ_j)``.

    A negative is hard where ``cos θ_j > cos(θ_y + m)``. ``t`` (buffer, starts at 0) is an EMA of the
    batch's mean target cosine: ``t ← (1 − momentum)·t + momentum·mean_i cos θ_{y_i}``, updated from each
    training batch (the global batch under Partial FC) before use, frozen in eval. Early on t ≈ 0 and hard
    negatives weigh less than ``cos θ_j``; as training converges t grows and they weigh more.

    Args:
        scale: s (default 64).
        margin: m in radians (default 0.5).
        momentum: EMA weight of the batch's mean target cosine (default 0.01).
    """

    def __init__(self, scale: float = 64.0, margin: float = 0.5, momentum: float = 0.01) -> None:
        super().__init__()
        check_range("margin.scale", scale, 0.0, low_open=True, high_open=True)
        check_range("margin.margin", margin, 0.0, math.pi / 2, high_open=True)
        check_range("margin.momentum", momentum, 0.0, 1.0, low_open=True)
        self.scale = scale
        self.margin = margin
        self.momentum = momentum
        self.register_buffer("t", torch.tensor(0.0))

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) logits; updates ``t`` first when training."""
        cos_target = inputs.target_cos()
        if self.training:
            self.t.lerp_(cos_target.mean().to(self.t.dtype), self.momentum)
        cos, t = inputs.cos, self.t.to(inputs.cos.dtype)
        hard = hard_negatives(inputs, cos_plus(cos_target, self.margin))
        logits = torch.where(hard, cos * (t + cos), cos)
        return self.scale * inputs.with_target(logits, arc_target(inputs.target(cos), self.margin))
