"""Shared machinery for classification heads.

Every head is a :class:`Head`: it maps ``(embeddings (B, E), labels (B,))`` to a :class:`HeadOutput`,
and its few hooks are all the LightningModule calls on it. Margin heads share :class:`MarginHead`:
a classifier (:mod:`facerec.heads.classifier`) gives the scaled cosines, a hook modifies the target
class's, and the classifier takes the cross-entropy. Margin math and the cross-entropy run in float32
(or float64 when the inputs are float64) whatever the surrounding autocast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from facerec.heads.checks import check_range
from facerec.heads.classifier import Classifier
from facerec.heads.numerics import full_precision


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
    needs: center loss (a post-step update, its own optimizer group); a margin head passes them on to
    its classifier (Partial FC: sharded, sampled centres).

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

    def trained_parameters(self) -> list[Tensor]:
        """Every parameter the optimizer steps."""
        return list(self.parameters())

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups (extra keys such as ``lr`` override the optimizer's)."""
        return [{"params": self.trained_parameters()}]

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


class MarginHead(Head):
    """A margin applied to a classifier's cosines, then cross-entropy: ``classifier`` + :meth:`target_logit`.

    The classifier (:class:`~facerec.heads.classifier.Classifier`, every centre in every process, or
    :class:`~facerec.heads.partial_fc.PartialFC`, sharded and sampled) owns the class centres and gives
    the scaled cosines ``s·cos θ``; the head replaces each target entry by ``s·target_logit(cos θ_y)``
    and the classifier takes the cross-entropy. A new margin head is that one method. Margin math and
    the cross-entropy run in float32 (float64 for float64 inputs) whatever the surrounding autocast.

    Args:
        embedding_size: E, the embedding dimension.
        num_classes: C, the number of identities.
        scale: s, the logit scale.

    Attributes:
        classifier: The class centres (``classifier.weight``, (C, E)); replace it to hold them otherwise.
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float) -> None:
        super().__init__()
        check_range("scale", scale, 0.0, low_open=True, high_open=True)
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.scale = scale
        self.classifier: Classifier = Classifier(embedding_size, num_classes)

    @property
    def weight(self) -> Tensor:
        """The classifier's centres, (C·K, E) (this process' shard under Partial FC)."""
        return self.classifier.weight

    @property
    def full_logits(self) -> bool:
        """Whether ``forward``'s logits are (B, C), class-indexed (not with Partial FC)."""
        return self.classifier.full_logits

    @property
    def updates_after_step(self) -> bool:
        """Whether :meth:`update_after_step` does something (Partial FC with r < 1)."""
        return self.classifier.updates_after_step

    @abstractmethod
    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """Maps target cosines (B,) to modified target logits before scaling (B,).

        Args:
            cos_target: (B,) cosine between each embedding and its class centre.
            norms: (B,) embedding norms ``‖x_i‖`` (with gradient; only norm-aware heads use them).
        """

    def cosines(self, embeddings: Tensor) -> Tensor:
        """Cosine of each embedding (B, E) to each class, (B, C), in [-1, 1]; no margin (prediction)."""
        return self.classifier.class_cosines(full_precision(embeddings)).clamp(-1.0, 1.0)

    def local_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor | None:
        """A per-sample loss term beside the margin's, as a mean over this process' samples; none here."""
        return None

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """Computes the margin cross-entropy (plus :meth:`local_loss`).

        Args:
            embeddings: (B, E) features, any float dtype.
            labels: (B,) int64 class indices in [0, C).

        Returns:
            ``loss``: the batch mean (all processes' under Partial FC); ``logits``: (B', n) the classifier's
            columns with the margin applied ((B, C) with every centre).
        """
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = full_precision(embeddings)
            cos = self.classifier(x, labels, self.scale)
            present = cos.labels >= 0
            index = cos.labels.clamp_min(0).unsqueeze(1)
            scaled_target = cos.scaled.gather(1, index).squeeze(1)
            cos_target = torch.where(present, scaled_target / self.scale, 0.0).clamp(-1.0, 1.0)
            target = self.scale * self.target_logit(cos_target, cos.embeddings.norm(dim=1))
            target = torch.where(present, target.to(cos.scaled.dtype), scaled_target)
            logits = cos.scaled.scatter(1, index, target.unsqueeze(1))
            loss = self.classifier.cross_entropy(logits, cos.labels)
            extra = self.local_loss(embeddings, labels)
            if extra is not None:
                loss = loss + self.classifier.batch_mean(extra, len(labels), len(cos.labels))
            return HeadOutput(loss=loss, logits=logits)

    def trained_parameters(self) -> list[Tensor]:
        """Every parameter the optimizer steps: the classifier's, then the head's own."""
        own = [p for name, p in self.named_parameters() if not name.startswith("classifier.")]
        return [*self.classifier.optimized_parameters(), *own]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The classifier's (Partial FC with r < 1: the sampled centres' optimizer state)."""
        self.classifier.before_optimizer_step(optimizer)

    def update_after_step(self, skipped: bool = False) -> None:
        """The classifier's (Partial FC with r < 1: writes the sampled centres back)."""
        self.classifier.after_optimizer_step()

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """The classifier's: Partial FC keeps this rank's shard, which DDP must not sync."""
        return [f"classifier.{name}" for name in self.classifier.setup_distributed(rank, world_size)]

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """The classifier's: clipping by the whole gradient's norm when the centres are sharded."""
        return self.classifier.clip_grad_norm_(parameters, max_norm)

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """The classifier's (Partial FC: the centres stored whole)."""
        self.classifier.on_save_checkpoint(f"{prefix}classifier.", checkpoint, optimizers)

    def on_load_checkpoint(self, prefix: str, checkpoint: dict) -> None:
        """Renames the keys of checkpoints written before the classifier split, then the classifier's.

        Those held the centres in ``<prefix>weight`` and, under Partial FC, the head's own state under
        ``<prefix>margin_head.``.
        """
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(prefix)]:
            name = key[len(prefix) :]
            renamed = "classifier.weight" if name == "weight" else name.removeprefix("margin_head.")
            if renamed != name:
                state[f"{prefix}{renamed}"] = state.pop(key)
        self.classifier.on_load_checkpoint(f"{prefix}classifier.", checkpoint)
