"""AdaCos: adaptively scaled cosine logits, no margin (Zhang et al., CVPR 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.margin import Margin, MarginInput
from facerec.heads.numerics import safe_acos
from facerec.heads.registry import register_margin


@register_margin("adacos")
class AdaCos(Margin):
    """Logits ``s·cos θ_j`` with the scale s set from the training batches (dynamic AdaCos).

    The buffer ``scale`` starts at the fixed AdaCos scale ``√2·log(C − 1)`` (set by the first forward,
    which knows C; 0 until then). Each training forward, before the logits, sets
    ``s ← log B_avg / cos(min(π/4, θ_med))`` from the batch and the previous s:
    ``B_avg = (1/B)·Σ_i Σ_{k≠y_i} exp(s·cos θ_{i,k})`` and ``θ_med`` the median target angle
    (``torch.median``: the lower middle value for an even B, as the authors' code). s carries no
    gradient; eval forwards use it unchanged. ``dynamic=False`` keeps the fixed scale.

    Under Partial FC the sums run over every rank's columns and the median over the global batch, so
    every rank computes the same s. With sampling (``sample_rate < 1``) each sample sees its target and
    ``n − 1`` of the ``C − 1`` other classes (n: the step's columns over all ranks), so the sum is
    rescaled by ``(C − 1)/(n − 1)``: an estimate of the full sum (exact when the other classes' mean
    ``exp(s·cos)`` over the sampled columns is that over all), keeping s on the full softmax's scale.

    Args:
        dynamic: Update the scale from each training batch (default True); False: the fixed scale.
    """

    sampling = "estimate"

    def __init__(self, dynamic: bool = True) -> None:
        super().__init__()
        self.dynamic = dynamic
        self.register_buffer("scale", torch.tensor(0.0))

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) logits ``s·cos``; when training (and ``dynamic``) s is first updated from the batch."""
        num_classes = inputs.columns.num_classes
        if num_classes < 3:
            raise ValueError(f"margin adacos needs at least 3 classes (its scale √2·log(C − 1)); got C={num_classes}")
        with torch.no_grad():
            fixed = math.sqrt(2.0) * math.log(num_classes - 1)
            self.scale.copy_(torch.where(self.scale == 0, fixed, self.scale))
            if self.training and self.dynamic:
                self.scale.copy_(self.batch_scale(inputs, self.scale.to(inputs.cos.dtype)))
        return self.scale.to(inputs.cos.dtype) * inputs.cos

    @staticmethod
    def batch_scale(inputs: MarginInput, scale: Tensor) -> Tensor:
        """``log B_avg / cos(min(π/4, θ_med))`` (scalar) from the step's cosines and the previous ``scale``.

        Raises:
            ValueError: The step sees fewer than two class columns (no other class to sum over).
        """
        columns = inputs.columns
        if columns.num_columns < 2:
            raise ValueError("margin adacos needs at least 2 class columns per step; raise classifier.sample_rate")
        logits = (scale * inputs.cos.detach()).masked_fill(inputs.target_mask(), -math.inf)  # other classes only
        row_max = columns.max(logits)
        log_sums = row_max + columns.sum((logits - row_max.unsqueeze(1)).exp()).log()  # log Σ_{k≠y_i} e^{s·cos}
        coverage = (columns.num_classes - 1) / (columns.num_columns - 1)
        log_b_avg = torch.logsumexp(log_sums, dim=0) + math.log(coverage / len(log_sums))
        theta_med = safe_acos(inputs.target_cos()).median()
        return log_b_avg / torch.cos(theta_med.clamp_max(math.pi / 4))
