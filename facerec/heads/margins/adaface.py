"""AdaFace: quality-adaptive margin from the feature norm (Kim et al., CVPR 2022)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import TargetMargin
from facerec.heads.numerics import safe_acos
from facerec.heads.registry import register_margin


@register_margin("adaface")
class AdaFace(TargetMargin):
    """Target logit ``s·(cos(clip(θ_y + g_angle, ε, π − ε)) − g_add)``, ``g_angle = −m·ẑ``, ``g_add = m·ẑ + m``.

    Quality proxy ``ẑ_i = clip((‖x_i‖ − μ)/(σ + ε) · h, −1, 1)`` from the detached norm clipped to
    ``[norm_min, norm_max]``; μ, σ are EMA buffers ``batch_mean``/``batch_std``, updated with ``momentum``
    from each training batch before use, frozen in eval. High-norm images get an ArcFace-like angular
    margin, low-norm ones a CosFace-like additive one.

    Args:
        scale: s (default 64).
        margin: m (default 0.4).
        h: Concentration of ẑ (default 0.333).
        momentum: EMA weight of the current batch's statistics (default 0.01).
        eps: ε, the angle clip and the std guard (default 1e-3).
    """

    norm_min = 1e-3
    norm_max = 100.0

    def __init__(
        self,
        scale: float = 64.0,
        margin: float = 0.4,
        h: float = 0.333,
        momentum: float = 0.01,
        eps: float = 1e-3,
    ) -> None:
        super().__init__(scale)
        check_range("margin.margin", margin, 0.0, math.pi / 2, high_open=True)
        check_range("margin.h", h, 0.0, 1.0)
        check_range("margin.momentum", momentum, 0.0, 1.0, low_open=True)
        check_range("margin.eps", eps, 0.0, 0.1, low_open=True)
        self.margin = margin
        self.h = h
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def quality(self, norms: Tensor) -> Tensor:
        """ẑ (B,) in [-1, 1] for feature norms (B,), no gradient; updates the EMA when training."""
        norms = norms.detach().clamp(self.norm_min, self.norm_max)
        if self.training and norms.numel() > 1:
            self.batch_mean.lerp_(norms.mean().to(self.batch_mean.dtype), self.momentum)
            self.batch_std.lerp_(norms.std().to(self.batch_std.dtype), self.momentum)
        mean, std = self.batch_mean.to(norms.dtype), self.batch_std.to(norms.dtype)
        return ((norms - mean) / (std + self.eps) * self.h).clamp(-1.0, 1.0)

    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """``cos(clip(θ − m·ẑ, ε, π − ε)) − (m·ẑ + m)``, (B,)."""
        z = self.quality(norms)
        theta = (safe_acos(cos_target) - self.margin * z).clamp(self.eps, math.pi - self.eps)
        return torch.cos(theta) - (self.margin * z + self.margin)
