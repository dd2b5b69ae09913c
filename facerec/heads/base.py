"""Shared machinery for classification heads.

Every head is a :class:`Head`: it maps ``(embeddings (B, E), labels (B,))`` to a :class:`HeadOutput`,
and its few hooks are all the LightningModule calls on it. Margin heads share
:class:`MarginHead`: a normalised linear layer gives cosines (B, C), a hook modifies the target
class's cosine, the result is scaled and fed to cross-entropy. Margin math and the cross-entropy
run in float32 (or float64 when the inputs are float64) whatever the surrounding autocast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.heads.checks import check_range
from facerec.heads.cosine_linear import scaled_cosine_linear

ACOS_EPS = 1e-7
"""Cosines are clamped to ``[-1 + ACOS_EPS, 1 - ACOS_EPS]`` before ``acos`` (finite gradients)."""


@dataclass
class HeadOutput:
    """What a head returns.

    Attributes:
        loss: Scalar, mean over the batch, everything the head contributes.
        logits: (B, C) scaled logits the cross-entropy saw (margin applied to the target class).
    """

    loss: Tensor
    logits: Tensor


class Head(nn.Module, ABC):
    """The interface between a classification head and the LightningModule.

    A head computes its loss in :meth:`forward`; the hooks below have defaults that suit a head whose
    parameters are plain, replicated and trained by the optimizer alone. A head overrides the hooks it
    needs: center loss (a post-step update, its own optimizer group), Partial FC (sharded centres).

    Attributes:
        full_logits: ``forward``'s logits are (B, C), class-indexed: training accuracy is their argmax.
        updates_after_step: :meth:`update_after_step` does something (the module then tells it whether
            the step was skipped, which costs fp16 runs a read of the gradient scale).
    """

    full_logits: bool = True
    updates_after_step: bool = False

    @abstractmethod
    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """The loss of (B, E) embeddings with (B,) int64 labels in [0, C)."""

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups (extra keys such as ``lr`` override the optimizer's)."""
        return [{"params": list(self.parameters())}]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after the backward pass, before ``optimizer`` steps; nothing by default."""

    def update_after_step(self, skipped: bool = False) -> None:
        """Called after every optimizer step (``skipped``: its gradients were dropped); nothing by default."""

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Prepares the head for rank ``rank`` of ``world_size`` before training.

        Returns:
            Names of the head's parameters DDP must neither broadcast nor average (sharded ones).
        """
        return []

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """Clips the whole model's gradient norm if this head must (its gradient is sharded); False: it need not."""
        return False

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Edits a checkpoint being saved (``prefix``: the head's state-dict prefix); nothing by default."""

    def on_load_checkpoint(self, prefix: str, checkpoint: dict) -> None:
        """Edits a checkpoint before its weights are loaded into the head; nothing by default."""


def full_precision(x: Tensor) -> Tensor:
    """Casts to float32 unless the tensor is already float32 or float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def safe_acos(cos: Tensor) -> Tensor:
    """``acos`` with the input clamped away from ±1, so the gradient stays finite; any shape."""
    return torch.acos(cos.clamp(-1.0 + ACOS_EPS, 1.0 - ACOS_EPS))


class MarginHead(Head):
    """Normalised linear layer → target-cosine hook → scale → cross-entropy.

    Subclasses implement :meth:`target_logit`, which maps the target class's cosine to the
    modified (unscaled) target logit; a new margin head is that one method. The scale is folded
    into the cosine layer (``s·cos`` for all classes), then the target entry is replaced by
    ``s·target_logit(cos θ_y)``. Class centres live in ``weight``, shape (C, E).

    Args:
        embedding_size: E, the embedding dimension.
        num_classes: C, the number of identities.
        scale: s, the logit scale.
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float) -> None:
        super().__init__()
        check_range("scale", scale, 0.0, low_open=True, high_open=True)
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    @abstractmethod
    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """Maps target cosines (B,) to modified target logits before scaling (B,).

        Args:
            cos_target: (B,) cosine between each embedding and its class centre.
            norms: (B,) embedding norms ``‖x_i‖`` (with gradient; only norm-aware heads use them).
        """

    def class_cosines(self, embeddings: Tensor, scale: float = 1.0, weight: Tensor | None = None) -> Tensor:
        """``scale`` × cosine of each embedding (B, E) to each class, (B, C), not clamped.

        Uses :func:`~facerec.heads.cosine_linear.scaled_cosine_linear`, which never materialises
        the normalised weight and has a fused backward.

        Args:
            embeddings: (B, E).
            scale: Factor folded into the cosines.
            weight: Class-centre rows to use instead of ``self.weight`` (Partial FC passes its
                sampled shard); same row layout, a subset of the classes.
        """
        x = F.normalize(embeddings, dim=1)
        rows = self.weight if weight is None else weight
        return scaled_cosine_linear(x, full_precision(rows).to(x.dtype), scale)

    def cosines(self, embeddings: Tensor) -> Tensor:
        """Cosine of each embedding (B, E) to each class, (B, C), in [-1, 1]; no margin (prediction)."""
        return self.class_cosines(full_precision(embeddings)).clamp(-1.0, 1.0)

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """Computes the margin cross-entropy.

        Args:
            embeddings: (B, E) features, any float dtype.
            labels: (B,) int64 class indices in [0, C).
        """
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = full_precision(embeddings)
            scaled = self.class_cosines(x, self.scale)
            index = labels.view(-1, 1)
            cos_target = (scaled.gather(1, index).squeeze(1) / self.scale).clamp(-1.0, 1.0)
            target = self.scale * self.target_logit(cos_target, x.norm(dim=1))
            logits = scaled.scatter(1, index, target.unsqueeze(1).to(scaled.dtype))
            return HeadOutput(loss=F.cross_entropy(logits, labels), logits=logits)
