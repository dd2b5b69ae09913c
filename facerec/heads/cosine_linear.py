"""Scaled cosines between unit embeddings and class weights, with a fused backward."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

NORM_EPS = 1e-12


class _CosineLinear(torch.autograd.Function):
    """``z_bj = s·(x̂_b · w_j) / ‖w_j‖`` without materialising ``W/‖W‖``.

    Backward: ``∂L/∂w_j = (G'ᵀ x̂)_j − k_j·w_j``, ``G' = s·G / ‖w‖``, ``k_j = Σ_b G_bj·z_bj / ‖w_j‖²``:
    one matmul and one fused pass over W (autograd through ``F.normalize`` needs several).
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
    """``scale·cos`` (B, C) of unit embeddings (B, E) to rows of ``weight`` (C, E); unclamped."""
    return _CosineLinear.apply(x_unit, weight, scale)
