"""Center loss (Wen et al., ECCV 2016), a loss term any head can add (``+loss_term@head.terms.center=center``)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.heads.checks import check_range
from facerec.heads.numerics import full_precision
from facerec.heads.terms import LossTerm

UPDATE_MODES = ("paper", "sgd")
CENTER_ON = ("raw", "normalized")


class CenterLoss(LossTerm):
    """``λ·½·mean_i ‖f_i − c_{y_i}‖²`` with class centres ``centers`` (C, E), initialised to zero.

    ``center_on="raw"``: ``f_i = x_i`` as in Wen et al.; ``"normalized"``: ``f_i = x_i/‖x_i‖``, the unit
    hypersphere a cosine margin sees (loss ≤ 4 per sample).
    ``update="paper"``: ``centers`` is a buffer; after each step :meth:`after_optimizer_step` applies
    ``c_j ← c_j − α·Σ_i δ(y_i=j)(c_j − f_i) / (1 + Σ_i δ(y_i=j))`` over all training batches since the
    last update (all micro-batches under gradient accumulation; all ranks under DDP, via one all-reduce
    of per-class sums and counts, so ranks hold identical centres).
    ``update="sgd"``: ``centers`` is a parameter with learning rate ``center_lr`` (default ``α/λ``, making
    the SGD step ``α·Σ_i δ(y_i=j)(c_j − f_i)/B``, close to the paper's rule).

    Args:
        embedding_size: E.
        num_classes: C.
        weight: λ (default 0.003).
        alpha: α, the centre learning rate of the paper rule (default 0.5).
        update: ``"paper"`` or ``"sgd"``.
        center_lr: Centre learning rate for ``update="sgd"``; ``None`` means ``α/λ`` (α when λ = 0).
        center_on: ``"raw"`` or ``"normalized"`` embeddings.

    Raises:
        ValueError: Unknown ``update`` or ``center_on``, or a value out of range.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        weight: float = 0.003,
        alpha: float = 0.5,
        update: str = "paper",
        center_lr: float | None = None,
        center_on: str = "raw",
    ) -> None:
        super().__init__()
        if update not in UPDATE_MODES:
            raise ValueError(f"unknown center update {update!r}; valid: {', '.join(UPDATE_MODES)}")
        if center_on not in CENTER_ON:
            raise ValueError(f"unknown center_on {center_on!r}; valid: {', '.join(CENTER_ON)}")
        check_range("terms.center.weight", weight, 0.0)
        check_range("terms.center.alpha", alpha, 0.0, 1.0, low_open=True)
        if center_lr is not None:
            check_range("terms.center.center_lr", center_lr, 0.0, low_open=True)
        self.weight = weight
        self.alpha = alpha
        self.update = update
        self.center_on = center_on
        default_lr = alpha / weight if weight else alpha
        self.center_lr = default_lr if center_lr is None else center_lr
        centers = torch.zeros(num_classes, embedding_size)
        if update == "sgd":
            self.centers = nn.Parameter(centers)
        else:
            self.register_buffer("centers", centers)
        self._stats: Tensor | None = None

    def features(self, embeddings: Tensor) -> Tensor:
        """(B, E) → (B, E) the features the loss sees (``center_on``), full precision."""
        x = full_precision(embeddings)
        return F.normalize(x, dim=1) if self.center_on == "normalized" else x

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar loss for embeddings (B, E) and labels (B,); when training, accumulates the batch's statistics."""
        x = self.features(embeddings)
        if self.update == "paper" and self.training and torch.is_grad_enabled():
            self._accumulate(x.detach(), labels)
        diff = x - self.centers.to(x.dtype)[labels]
        return self.weight * 0.5 * diff.pow(2).sum(dim=1).mean()

    def _accumulate(self, x: Tensor, labels: Tensor) -> None:
        """Adds features (B, E) to the (C, E + 1) per-class sums and counts."""
        num_classes, dim = self.centers.shape
        if self._stats is None:
            self._stats = torch.zeros(num_classes, dim + 1, dtype=self.centers.dtype, device=self.centers.device)
        self._stats[:, :dim].index_add_(0, labels, x.to(self._stats.dtype))
        self._stats[:, dim].index_add_(0, labels, torch.ones_like(labels, dtype=self._stats.dtype))

    def after_optimizer_step(self, skipped: bool = False) -> None:
        """Paper-rule centre update (collective under DDP); a skipped step's statistics are dropped."""
        if skipped:
            self._stats = None
        else:
            self.update_centers()

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

    def param_groups(self) -> list[dict]:
        """With ``update="sgd"``: the centres in their own group (``center_lr``, no weight decay)."""
        if self.update != "sgd":
            return []
        return [{"params": [self.centers], "lr": self.center_lr, "weight_decay": 0.0}]
