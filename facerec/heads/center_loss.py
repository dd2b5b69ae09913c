"""Center loss (Wen et al., ECCV 2016), added by heads to their cross-entropy."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from facerec.heads.base import HeadOutput
from facerec.heads.checks import check_range
from facerec.heads.numerics import full_precision

UPDATE_MODES = ("paper", "sgd")


class CenterLoss(nn.Module):
    """``λ·½·mean_i ‖x_i − c_{y_i}‖²`` with class centres ``centers`` (C, E), initialised to zero.

    ``update="paper"``: ``centers`` is a buffer; after each step :meth:`update_centers` applies
    ``c_j ← c_j − α·Σ_i δ(y_i=j)(c_j − x_i) / (1 + Σ_i δ(y_i=j))`` over all training batches since the
    last update (all micro-batches under gradient accumulation; all ranks under DDP, via one all-reduce
    of per-class sums and counts, so ranks hold identical centres).
    ``update="sgd"``: ``centers`` is a parameter with learning rate ``center_lr`` (default ``α/λ``, making
    the SGD step ``α·Σ_i δ(y_i=j)(c_j − x_i)/B``, close to the paper's rule).

    Args:
        num_classes: C.
        embedding_size: E.
        center_weight: λ (default 0.003).
        alpha: α, the centre learning rate of the paper rule (default 0.5).
        update: ``"paper"`` or ``"sgd"``.
        center_lr: Centre learning rate for ``update="sgd"``; ``None`` means ``α/λ`` (α when λ = 0).

    Raises:
        ValueError: If ``update`` is not one of ``"paper"``, ``"sgd"``.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        center_weight: float = 0.003,
        alpha: float = 0.5,
        update: str = "paper",
        center_lr: float | None = None,
    ) -> None:
        super().__init__()
        if update not in UPDATE_MODES:
            raise ValueError(f"unknown center update {update!r}; valid: {', '.join(UPDATE_MODES)}")
        check_range("center_weight", center_weight, 0.0)
        check_range("alpha", alpha, 0.0, 1.0, low_open=True)
        if center_lr is not None:
            check_range("center_lr", center_lr, 0.0, low_open=True)
        self.center_weight = center_weight
        self.alpha = alpha
        self.update = update
        default_lr = alpha / center_weight if center_weight else alpha
        self.center_lr = default_lr if center_lr is None else center_lr
        centers = torch.zeros(num_classes, embedding_size)
        if update == "sgd":
            self.centers = nn.Parameter(centers)
        else:
            self.register_buffer("centers", centers)
        self._stats: Tensor | None = None

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Scalar loss for features (B, E) and labels (B,); when training, accumulates the batch's statistics."""
        x = full_precision(features)
        if self.update == "paper" and self.training and torch.is_grad_enabled():
            self._accumulate(x.detach(), labels)
        diff = x - self.centers.to(x.dtype)[labels]
        return self.center_weight * 0.5 * diff.pow(2).sum(dim=1).mean()

    def _accumulate(self, x: Tensor, labels: Tensor) -> None:
        """Adds features (B, E) to the (C, E + 1) per-class sums and counts."""
        num_classes, dim = self.centers.shape
        if self._stats is None:
            self._stats = torch.zeros(num_classes, dim + 1, dtype=self.centers.dtype, device=self.centers.device)
        self._stats[:, :dim].index_add_(0, labels, x.to(self._stats.dtype))
        self._stats[:, dim].index_add_(0, labels, torch.ones_like(labels, dtype=self._stats.dtype))

    def discard_statistics(self) -> None:
        """Drops the statistics accumulated since the last update (skipped step)."""
        self._stats = None

    @torch.no_grad()
    def update_centers(self) -> None:
        """Applies the paper rule to the accumulated statistics (collective under DDP); no-op if none."""
        if self._stats is None:
            return
        stats, self._stats = self._stats, None
        dim = self.centers.shape[1]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        present = stats[:, dim].nonzero().squeeze(1)
        sums, counts, centers = stats[present, :dim], stats[present, dim:], self.centers[present]
        self.centers.index_add_(0, present, -self.alpha * (counts * centers - sums) / (1.0 + counts))


class CenterLossMixin:
    """Adds the head's :class:`CenterLoss` ``center_loss`` to its loss, optimizer groups and post-step hook.

    Margin heads pick it up via :meth:`local_loss`; other heads call :meth:`with_center_loss`.
    """

    center_loss: CenterLoss
    updates_after_step = True

    def center_features(self, embeddings: Tensor) -> Tensor:
        """Features (B, E) the center loss sees: the embeddings, full precision."""
        return full_precision(embeddings)

    def local_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Center loss (mean over B) of :meth:`center_features` (B, E) and labels (B,)."""
        return self.center_loss(self.center_features(embeddings), labels)

    def with_center_loss(self, output: HeadOutput, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """Adds :meth:`local_loss` to ``output.loss``."""
        return HeadOutput(loss=output.loss + self.local_loss(embeddings, labels), logits=output.logits)

    def update_after_step(self, skipped: bool = False) -> None:
        """Paper-rule centre update, then ``super()``'s hook. Call after each step on every rank (collective).

        Args:
            skipped: The step's gradients were dropped: discard its statistics, keep the centres.
        """
        if skipped:
            self.center_loss.discard_statistics()
        else:
            self.center_loss.update_centers()
        super().update_after_step(skipped=skipped)

    def param_groups(self) -> list[dict]:
        """Trained parameters; with ``update="sgd"`` the centres get their own group (``center_lr``, no decay)."""
        params = self.trained_parameters()
        if self.center_loss.update != "sgd":
            return [{"params": params}]
        centers = self.center_loss.centers
        return [
            {"params": [p for p in params if p is not centers]},
            {"params": [centers], "lr": self.center_loss.center_lr, "weight_decay": 0.0},
        ]
