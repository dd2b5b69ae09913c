"""MV-Softmax: mis-classified vector guided softmax (Wang et al., AAAI 2020)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import Margin, MarginInput
from facerec.heads.margins.hard_negative import arc_target, cos_plus, hard_negatives
from facerec.heads.registry import register_margin

BASES = ("am", "arc")
"""Base margins: ``am`` (MV-AM-Softmax, ``cos θ − m``), ``arc`` (MV-Arc-Softmax, ``cos(θ + m)``)."""


@register_margin("mv_softmax")
class MVSoftmax(Margin):
    """Target logit ``s·f(θ_y)``; mis-classified negatives ``s·(t·cos θ_j + t − 1)`` (the paper's fixed weight).

    ``f(θ) = cos θ − m`` (``base=am``) or ``cos(θ + m)`` (``base=arc``, past ``π − m`` ArcFace's monotonic
    fallback). A negative is mis-classified where ``cos θ_j > f(θ_y)`` (for ``arc`` with ``cos(θ_y + m)``
    itself, as the authors' code). The margin applies to every target, as in the paper; FaceX-Zoo and the
    authors' ``easy_margin`` skip it where ``cos θ_y ≤ m`` (AM) or ``≤ 0`` (Arc).

    Args:
        scale: s (default 32).
        margin: m: a cosine margin in [0, 1) for ``am``, an angle in [0, π/2) for ``arc`` (default 0.35).
        t: Weight of the mis-classified negatives, ≥ 1 (1: the base margin alone; default 1.2).
        base: ``"am"`` or ``"arc"`` (default ``"am"``).

    Raises:
        ValueError: ``base`` is not ``am`` or ``arc``, or a value is out of range.
    """

    def __init__(self, scale: float = 32.0, margin: float = 0.35, t: float = 1.2, base: str = "am") -> None:
        super().__init__()
        if base not in BASES:
            raise ValueError(f"head.margin.base={base!r} must be one of {', '.join(BASES)}")
        check_range("margin.scale", scale, 0.0, low_open=True, high_open=True)
        check_range("margin.margin", margin, 0.0, 1.0 if base == "am" else math.pi / 2, high_open=True)
        check_range("margin.t", t, 1.0, high_open=True)
        self.scale = scale
        self.margin = margin
        self.t = t
        self.base = base

    def target_logit(self, cos_target: Tensor) -> Tensor:
        """``f(θ_y)`` (B,) of target cosines (B,)."""
        return cos_target - self.margin if self.base == "am" else arc_target(cos_target, self.margin)

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) logits."""
        cos_target = inputs.target_cos()
        threshold = cos_target - self.margin if self.base == "am" else cos_plus(cos_target, self.margin)
        cos = inputs.cos
        logits = torch.where(hard_negatives(inputs, threshold), self.t * cos + self.t - 1.0, cos)
        return self.scale * inputs.with_target(logits, self.target_logit(inputs.target(cos)))
