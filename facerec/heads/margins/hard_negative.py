"""Shared math of the hard-negative margins (CurricularFace, MV-Softmax, NPCFace).

These margins re-weight a sample's *hard* negatives, the columns j whose cosine beats the sample's target
cosine with its margin applied: ``cos θ_j > f(cos θ_y)``. The mask needs every sample's target cosine on
every rank (:meth:`~facerec.heads.margin.MarginInput.target_cos`), so it is exact under Partial FC.
"""

from __future__ import annotations

import torch
from torch import Tensor

from facerec.heads.margin import MarginInput


def cos_plus(cos: Tensor, margin: float | Tensor) -> Tensor:
    """``cos(θ + m)`` from ``cos θ`` (any shape) and ``m`` (a float or a tensor broadcasting with it).

    The sine is clamped away from 0, so the gradient stays finite at ``cos θ = ±1``.
    """
    margin = torch.as_tensor(margin, dtype=cos.dtype, device=cos.device)
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
    return cos * torch.cos(margin) - sin * torch.sin(margin)


def arc_target(cos_target: Tensor, margin: float | Tensor) -> Tensor:
    """ArcFace's target ``cos(θ + m)`` (B,); past ``θ = π − m`` the monotonic fallback ``cos θ − m·sin m``.

    Equals :class:`~facerec.heads.ArcFace`'s target logit (insightface's ``th``/``mm``); ``m`` may be per
    sample (B,).
    """
    margin = torch.as_tensor(margin, dtype=cos_target.dtype, device=cos_target.device)
    past_pi = cos_target <= -torch.cos(margin)  # cos(π − m) = −cos m
    return torch.where(past_pi, cos_target - margin * torch.sin(margin), cos_plus(cos_target, margin))


def hard_negatives(inputs: MarginInput, threshold: Tensor) -> Tensor:
    """(B, n) bool, no gradient: the negative columns whose cosine exceeds the sample's ``threshold`` (B,)."""
    return (inputs.cos.detach() > threshold.unsqueeze(1)) & ~inputs.target_mask()
