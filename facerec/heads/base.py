"""Head interface (:class:`Head`, :class:`HeadOutput`) and the shared margin head (:class:`MarginHead`)."""

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
    """Head result: ``loss`` scalar batch mean; ``logits`` (B, C) as fed to the cross-entropy (margin applied)."""

    loss: Tensor
    logits: Tensor


class Head(nn.Module, ABC):
    """Classification head: :meth:`forward` gives the loss; the hooks are what the LightningModule calls.

    Hook defaults suit plain, replicated parameters trained by the optimizer alone.

    Attributes:
        full_logits: ``forward``'s logits are (B, C), class-indexed (training accuracy uses their argmax).
        updates_after_step: :meth:`update_after_step` does something (fp16 runs then read the grad scale
            to tell it whether the step was skipped).
    """

    full_logits: bool = True
    updates_after_step: bool = False

    @abstractmethod
    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """Loss for embeddings (B, E) and int64 labels (B,) in [0, C)."""

    def trained_parameters(self) -> list[Tensor]:
        """Every parameter the optimizer steps."""
        return list(self.parameters())

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups; extra keys (e.g. ``lr``) override the optimizer's."""
        return [{"params": self.trained_parameters()}]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after backward, before ``optimizer.step()``; no-op by default."""

    def update_after_step(self, skipped: bool = False) -> None:
        """Called after every optimizer step (``skipped``: its gradients were dropped); no-op by default."""

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Prepares for rank ``rank`` of ``world_size``; returns parameter names DDP must not sync (sharded)."""
        return []

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """Clips the whole model's grad norm if the head's gradient is sharded; returns whether it did."""
        return False

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Edits a checkpoint being saved (``prefix``: the head's state-dict prefix); no-op by default."""

    def on_load_checkpoint(self, prefix: str, checkpoint: dict) -> None:
        """Edits a checkpoint before its weights are loaded into the head; no-op by default."""


class MarginHead(Head):
    """Logits ``s·cos θ_j``, with the target entry replaced by ``s·target_logit(cos θ_y)``, then cross-entropy.

    ``classifier`` (:class:`~facerec.heads.classifier.Classifier` or
    :class:`~facerec.heads.partial_fc.PartialFC`) owns the centres, gives the cosines and takes the
    cross-entropy; subclasses implement :meth:`target_logit` only. Runs in float32 (float64 for float64
    inputs) regardless of autocast.

    Args:
        embedding_size: E, the embedding dimension.
        num_classes: C, the number of identities.
        scale: s > 0, the logit scale.

    Attributes:
        classifier: Holds the centres ``classifier.weight`` (C·K, E); replaceable (e.g. by PartialFC).
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
        """Class centres (C·K, E); this rank's shard under Partial FC."""
        return self.classifier.weight

    @property
    def full_logits(self) -> bool:
        """Whether ``forward``'s logits are (B, C), class-indexed (False under Partial FC)."""
        return self.classifier.full_logits

    @property
    def updates_after_step(self) -> bool:
        """Whether :meth:`update_after_step` does something (Partial FC with r < 1)."""
        return self.classifier.updates_after_step

    @abstractmethod
    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """Unscaled target logit (B,) from target cosines (B,) and embedding norms (B,) (norm-aware heads)."""

    def cosines(self, embeddings: Tensor) -> Tensor:
        """Cosines (B, C) in [-1, 1] of embeddings (B, E) to each class, without margin."""
        return self.classifier.class_cosines(full_precision(embeddings)).clamp(-1.0, 1.0)

    def local_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor | None:
        """Extra per-sample loss (mean over this process' samples) added to the margin loss; None here."""
        return None

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """Margin cross-entropy plus :meth:`local_loss`.

        Args:
            embeddings: (B, E) any float dtype.
            labels: (B,) int64 in [0, C).

        Returns:
            ``loss``: batch mean (global batch under Partial FC); ``logits``: (B, C), or (B_global, n_sampled)
            under Partial FC.
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
        """The classifier's optimized parameters, then the head's own."""
        own = [p for name, p in self.named_parameters() if not name.startswith("classifier.")]
        return [*self.classifier.optimized_parameters(), *own]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Delegates to the classifier (Partial FC, r < 1: moves the sampled centres' optimizer state)."""
        self.classifier.before_optimizer_step(optimizer)

    def update_after_step(self, skipped: bool = False) -> None:
        """Delegates to the classifier (Partial FC, r < 1: writes the sampled centres back)."""
        self.classifier.after_optimizer_step()

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Delegates to the classifier; returns its unsynced parameters, prefixed ``classifier.``."""
        return [f"classifier.{name}" for name in self.classifier.setup_distributed(rank, world_size)]

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """Delegates to the classifier (clips when the centres are sharded)."""
        return self.classifier.clip_grad_norm_(parameters, max_norm)

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Delegates to the classifier (Partial FC stores the centres unsharded)."""
        self.classifier.on_save_checkpoint(f"{prefix}classifier.", checkpoint, optimizers)

    def on_load_checkpoint(self, prefix: str, checkpoint: dict) -> None:
        """Renames old-layout keys, then delegates to the classifier.

        ``<prefix>weight`` → ``<prefix>classifier.weight``; ``<prefix>margin_head.*`` → ``<prefix>*``.
        """
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(prefix)]:
            name = key[len(prefix) :]
            renamed = "classifier.weight" if name == "weight" else name.removeprefix("margin_head.")
            if renamed != name:
                state[f"{prefix}{renamed}"] = state.pop(key)
        self.classifier.on_load_checkpoint(f"{prefix}classifier.", checkpoint)
