"""Plain softmax: linear logits ``x·w_j + b_j`` (no margin, no normalisation)."""

from __future__ import annotations

from torch import Tensor

from facerec.heads.margin import Margin, MarginInput
from facerec.heads.registry import register_margin


@register_margin("softmax")
class Softmax(Margin):
    """Logits ``x·w_j + b_j = ‖x‖·‖w_j‖·cos θ_j + b_j``, the linear classifier of a plain softmax.

    Centres start as ``nn.Linear``'s. Needs one centre per class (``subcenters=1``).

    Args:
        bias: The classifier holds a per-class bias b (default True).
    """

    linear_init = True

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.class_bias = bias

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) linear logits."""
        centre_norms = inputs.centre_norms()
        if centre_norms is None:
            raise ValueError("the softmax margin takes one centre per class; set head.subcenters=1")
        logits = inputs.norms.unsqueeze(1) * inputs.cos * centre_norms.unsqueeze(0)
        return logits if inputs.bias is None else logits + inputs.bias.unsqueeze(0)
