"""Cosine similarity between unit embeddings and class weights, with a fused backward."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

NORM_EPS = 1e-12


class _CosineLinear(torch.autograd.Function):
    """``z_bj = s·(x̂_b · w_j) / ‖w_j‖``, i.e. scaled cosines.

    Autograd through ``F.normalize(W)`` (or through ``‖w_j‖``) makes several passes over the
    (C, E) weight in the backward. Here the weight gradient is
    ``∂L/∂w_j = (G'ᵀ x̂)_j − k_j·w_j`` with ``G' = s·G / ‖w‖`` and ``k_j = Σ_b G_bj·z_bj / ‖w_j‖²``:
    one matmul plus one fused pass over W. Folding s into the column factor saves two (B, C)
    passes.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x_unit: Tensor, weight: Tensor, scale: float) -> Tensor:
        norm = weight.norm(dim=1)
        inv_norm = norm.clamp_min(NORM_EPS).reciprocal()
        logits = (x_unit @ weight.T) * (inv_norm * scale)
        ctx.save_for_backward(x_unit, weight, inv_norm, logits, norm > NORM_EPS)
        ctx.scale = scale
        return logits

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        x_unit, weight, inv_norm, logits, has_norm = ctx.saved_tensors
        scaled = grad * (inv_norm * ctx.scale)
        k = (grad * logits).sum(dim=0) * inv_norm.square() * has_norm
        grad_weight = (scaled.T @ x_unit).addcmul_(k.unsqueeze(1), weight, value=-1.0)
        return scaled @ weight, grad_weight, None


def scaled_cosine_linear(x_unit: Tensor, weight: Tensor, scale: float = 1.0) -> Tensor:
    """``scale`` × cosines (B, C) between unit-norm embeddings (B, E) and the rows of ``weight`` (C, E).

    Not clamped: rounding may put cosines slightly outside [-1, 1].
    """
    return _CosineLinear.apply(x_unit, weight, scale)
