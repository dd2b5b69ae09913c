"""Class centres and the softmax over them: what a margin head's margin is applied to.

A margin head (:class:`~facerec.heads.base.MarginHead`) is a margin and a classifier. The classifier
owns the class centres, gives the head the scaled cosines of a batch to them, and takes the
cross-entropy of the logits the head builds from those cosines. :class:`Classifier` holds every
centre in every process (``classifier=full``); :class:`~facerec.heads.partial_fc.PartialFC` shards
them over the processes and samples them (``classifier=partial_fc``). Its few hooks are those of
:class:`~facerec.heads.base.Head` that concern centres, with plain defaults.
"""

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
    """A classifier's scaled cosines for one batch.

    Attributes:
        scaled: (B', n) scale × cosine of each embedding to each class column (the closest of a class'
            sub-centres).
        labels: (B',) each embedding's column in ``scaled``; −1 where its class is not among the columns.
        embeddings: (B', E) the embeddings the rows belong to (all processes' under Partial FC).
    """

    scaled: Tensor
    labels: Tensor
    embeddings: Tensor


class Classifier(nn.Module):
    """Every class centre in this process, and the softmax over all classes.

    Args:
        embedding_size: E.
        num_classes: C.
        rows_per_class: K, centres per class (sub-center ArcFace); a class' cosine is the largest of its K.
        weight: (C·K, E) initial centres; default: normal with std 0.01.

    Attributes:
        weight: (C·K, E) the centres, row ``j·K + k`` centre k of class j.
        full_logits: The logits are (B, C), class-indexed: training accuracy is their argmax.
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
        """``scale`` × cosine of each (B, E) embedding to each class, (B, n), not clamped.

        Uses :func:`~facerec.heads.cosine_linear.scaled_cosine_linear`, which never materialises the
        normalised centres and has a fused backward.

        Args:
            embeddings: (B, E).
            scale: Factor folded into the cosines.
            rows: (n·K, E) centres of whole classes to use instead of :attr:`weight`.
        """
        x = F.normalize(embeddings, dim=1)
        centres = self.weight if rows is None else rows
        cos = scaled_cosine_linear(x, full_precision(centres).to(x.dtype), scale)
        if self.rows_per_class == 1:
            return cos
        return cos.view(cos.shape[0], -1, self.rows_per_class).max(dim=2).values

    def forward(self, embeddings: Tensor, labels: Tensor, scale: float) -> Cosines:
        """The scaled cosines of (B, E) full-precision embeddings to every class; ``labels`` (B,) index them."""
        return Cosines(self.class_cosines(embeddings, scale), labels, embeddings)

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of (B', n) logits with :attr:`Cosines.labels`."""
        return F.cross_entropy(logits, labels)

    def batch_mean(self, local_mean: Tensor, local_batch: int, batch: int) -> Tensor:
        """A per-sample term's mean over the whole batch (``batch`` samples) from this process' own mean."""
        return local_mean

    def optimized_parameters(self) -> list[Tensor]:
        """The parameters the optimizer steps (the centres)."""
        return [self.weight]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called before each optimizer step; nothing here."""

    def after_optimizer_step(self) -> None:
        """Called after each optimizer step; nothing here."""

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Prepares for rank ``rank`` of ``world_size``; names of parameters DDP must not sync (none here)."""
        return []

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """Clips the whole model's gradient norm if the centres' gradient is sharded; False: it is not."""
        return False

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Edits a checkpoint being saved (``prefix``: this module's state-dict prefix); nothing here."""

    def on_load_checkpoint(self, prefix: str, checkpoint: dict) -> None:
        """Edits a checkpoint before its weights are loaded; nothing here."""
