"""ElasticFace: per-sample margins drawn from a normal distribution (Boutros et al., CVPRW 2022)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import Margin, MarginInput
from facerec.heads.registry import register_margin

KINDS = ("arc", "cos")
"""``arc``: target ``cos(θ_y + m_i)`` (ElasticFace-Arc); ``cos``: ``cos θ_y − m_i`` (ElasticFace-Cos)."""
_STEP_STRIDE = 1_000_003
"""Seed of training step k's draws: ``seed + k·_STEP_STRIDE`` (mod 2⁶³)."""


@register_margin("elasticface")
class ElasticFace(Margin):
    """Target logit ``s·cos(θ_y + m_i)`` (``arc``) or ``s·(cos θ_y − m_i)`` (``cos``), ``m_i ~ N(m, σ²)``.

    Each training forward draws one margin per sample of the (global) batch; in eval every sample gets
    the mean m (a deterministic validation loss; the authors use the head only in training). With
    ``plus`` (ElasticFace+) the sorted draws go by the detached target cosines: the largest cosine gets
    the smallest margin, the smallest cosine the largest. Like the paper and the authors' code, ``arc``
    has no fallback past ``θ_y + m_i > π``.

    The draws of training step k come from a CPU generator seeded ``seed + k·1000003``, k the buffer
    ``step``: every rank draws the same B_global values, they are reproducible (:meth:`draws`) and a
    resumed run continues the stream.

    Args:
        scale: s (default 64).
        margin: m, the mean margin (default 0.5; radians for ``arc``).
        std: σ, the standard deviation of the margins (default 0.05).
        kind: ``"arc"`` or ``"cos"``.
        plus: Assign the sorted margins by target cosine (ElasticFace+).
        seed: Seed of the margins' random stream.
    """

    def __init__(
        self,
        scale: float = 64.0,
        margin: float = 0.5,
        std: float = 0.05,
        kind: str = "arc",
        plus: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_range("margin.scale", scale, 0.0, low_open=True, high_open=True)
        check_range("margin.margin", margin, 0.0, math.pi / 2 if kind == "arc" else 1.0, high_open=True)
        check_range("margin.std", std, 0.0, 1.0)
        check_range("margin.seed", seed, 0, 2**62)
        if kind not in KINDS:
            raise ValueError(f"head.margin.kind={kind!r} is not one of {', '.join(KINDS)}")
        self.scale = scale
        self.margin = margin
        self.std = std
        self.kind = kind
        self.plus = plus
        self.seed = seed
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))

    def draws(self, step: int, batch: int) -> Tensor:
        """(batch,) float64 CPU margins ``m + σ·z`` of training step ``step``, in draw order."""
        generator = torch.Generator().manual_seed((self.seed + step * _STEP_STRIDE) % 2**63)
        return self.margin + self.std * torch.randn(batch, generator=generator, dtype=torch.float64)

    def sample_margins(self, inputs: MarginInput) -> Tensor:
        """(B,) each sample's margin; training: this step's draws (sorted by target cosine with ``plus``)."""
        batch = inputs.cos.shape[0]
        if not self.training:
            return torch.full((batch,), self.margin, dtype=inputs.cos.dtype, device=inputs.cos.device)
        margins = self.draws(int(self.step), batch).to(device=inputs.cos.device, dtype=inputs.cos.dtype)
        self.step += 1
        if self.plus:
            order = inputs.target_cos().argsort(descending=True, stable=True)
            margins = torch.empty_like(margins).index_copy_(0, order, margins.sort().values)
        return margins

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) logits ``s·cos θ_j``, held targets replaced as above."""
        margins = self.sample_margins(inputs)
        cos_target = inputs.target(inputs.cos)
        if self.kind == "cos":
            target = cos_target - margins
        else:
            sin_target = torch.sqrt((1.0 - cos_target * cos_target).clamp_min(1e-12))
            target = cos_target * torch.cos(margins) - sin_target * torch.sin(margins)
        return self.scale * inputs.with_target(inputs.cos, target)
