"""A margin head's class centres, cosines and cross-entropy (``classifier=full``).

The sharded, sampled variant is :class:`~facerec.heads.partial_fc.PartialFC` (``classifier=partial_fc``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.heads.cosine_linear import scaled_cosine_linear
from facerec.heads.numerics import full_precision


@dataclass
class Cosines:
    """``scaled`` (B', n) ``s·cos`` per class column; ``labels`` (B',) target column or −1; ``embeddings`` (B', E)."""

    scaled: Tensor
    labels: Tensor
    embeddings: Tensor


class Classifier(nn.Module):
    """All class centres in every process; softmax over all classes.

    Args:
        embedding_size: E.
        num_classes: C.
        rows_per_class: K centres per class; a class' cosine is the max over its K.
        weight: (C·K, E) initial centres; default N(0, 0.01²).

    Attributes:
        weight: (C·K, E); row ``j·K + k`` is centre k of class j.
        full_logits: Logits are (B, C), class-indexed.
        updates_after_step: :meth:`after_optimizer_step` does something.
    """

    full_logits = True
    updates_after_step = False

    def __init__(
        self, embedding_size: int, num_classes: int, rows_per_class: int = 1, weight: Tensor | None = None
    ) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.rows_per_class = rows_per_class
        if weight is None:
            weight = nn.init.normal_(torch.empty(num_classes * rows_per_class, embedding_size), std=0.01)
        self.weight = nn.Parameter(weight)

    def class_cosines(self, embeddings: Tensor, scale: float = 1.0, rows: Tensor | None = None) -> Tensor:
        """``scale·cos`` (B, n) of embeddings (B, E) to each class, unclamped.

        ``rows``: (n·K, E) whole classes' centres to use instead of :attr:`weight`.
        """
        x = F.normalize(embeddings, dim=1)
        centres = self.weight if rows is None else rows
        cos = scaled_cosine_linear(x, full_precision(centres).to(x.dtype), scale)
        if self.rows_per_class == 1:
            return cos
        return cos.view(cos.shape[0], -1, self.rows_per_class).max(dim=2).values

    def forward(self, embeddings: Tensor, labels: Tensor, scale: float) -> Cosines:
        """Scaled cosines of full-precision embeddings (B, E) to every class; ``labels`` (B,) are the columns."""
        return Cosines(self.class_cosines(embeddings, scale), labels, embeddings)

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of (B', n) logits with :attr:`Cosines.labels`."""
        return F.cross_entropy(logits, labels)

    def batch_mean(self, local_mean: Tensor, local_batch: int, batch: int) -> Tensor:
        """Mean of a per-sample term over all ``batch`` samples, from this process' mean; identity here."""
        return local_mean

    def optimized_parameters(self) -> list[Tensor]:
        """The parameters the optimizer steps (the centres)."""
        return [self.weight]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """No-op."""

    def after_optimizer_step(self) -> None:
        """No-op."""

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Returns parameter names DDP must not sync; none here."""
        return []

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """Clips the grad norm if the centres are sharded; returns False (not sharded)."""
        return False

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """No-op."""

    def on_load_checkpoint(self, prefix: str, checkpoint: dict) -> None:
        """No-op."""
