"""Classification losses on a margin's logits: softmax cross-entropy, the default of every head."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from facerec.heads.margin import MarginInput


class ClassificationLoss(nn.Module, ABC):
    """Loss of a step's (B, n) logits: the batch mean over the (global) batch, equal on every rank.

    Reduce over classes with ``inputs.columns`` so the loss is exact under Partial FC.
    """

    @abstractmethod
    def forward(self, logits: Tensor, inputs: MarginInput) -> Tensor:
        """Scalar loss."""


class CrossEntropy(ClassificationLoss):
    """Softmax cross-entropy over all classes (all ranks' columns under Partial FC)."""

    def forward(self, logits: Tensor, inputs: MarginInput) -> Tensor:
        """Mean over the batch of ``log Σ_j exp(z_j) − z_y``."""
        return inputs.columns.cross_entropy(logits, inputs.labels)
