"""Full-precision casts and a clamped ``acos`` for the heads' math."""

from __future__ import annotations

import torch
from torch import Tensor

ACOS_EPS = 1e-7
"""Cosines are clamped to ``[-1 + ACOS_EPS, 1 - ACOS_EPS]`` before ``acos`` (finite gradients)."""


def full_precision(x: Tensor) -> Tensor:
    """Casts to float32 unless already float32 or float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def safe_acos(cos: Tensor) -> Tensor:
    """``acos`` of ``cos`` clamped away from ±1 (finite gradient); any shape."""
    return torch.acos(cos.clamp(-1.0 + ACOS_EPS, 1.0 - ACOS_EPS))
