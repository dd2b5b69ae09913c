"""Center loss (Wen et al., ECCV 2016) as a component that heads add to their cross-entropy."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from facerec.heads.base import HeadOutput, full_precision

UPDATE_MODES = ("paper", "sgd")


class CenterLoss(nn.Module):
    """``λ·½·mean_i ‖x_i − c_{y_i}‖²`` with class centres ``centers`` (C, E), initialised to zero.

    ``update="paper"``: ``centers`` is a buffer the optimizer never sees; after each step
    :meth:`update_centers` applies ``Δc_j = Σ_i δ(y_i=j)(c_j − x_i) / (1 + Σ_i δ(y_i=j))``,
    ``c_j ← c_j − α·Δc_j`` to the last training batch. Under DDP the per-class sums and counts are
    all-reduced first, so the rule sees the global batch and every rank holds identical centres.
    ``update="sgd"``: ``centers`` is a parameter trained by the optimizer with its own learning
    rate ``center_lr`` (default ``α/λ``, which makes the SGD step on ``c_j`` equal
    ``α·Σ_i δ(y_i=j)(c_j − x_i)/B``, close to the paper's rule).

    Args:
        num_classes: C.
        embedding_size: E.
        center_weight: λ (default 0.003).
        alpha: α, the centre learning rate of the paper rule (default 0.5).
        update: ``"paper"`` or ``"sgd"``.
        center_lr: Learning rate of the centres for ``update="sgd"``; ``None`` means ``α/λ``.

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
        self.center_weight = center_weight
        self.alpha = alpha
        self.update = update
        self.center_lr = alpha / center_weight if center_lr is None else center_lr
        centers = torch.zeros(num_classes, embedding_size)
        if update == "sgd":
            self.centers = nn.Parameter(centers)
        else:
            self.register_buffer("centers", centers)
        self._last_batch: tuple[Tensor, Tensor] | None = None

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Scalar center loss for (B, E) features and (B,) labels; remembers the batch if training."""
        x = full_precision(features)
        if self.update == "paper" and self.training and torch.is_grad_enabled():
            self._last_batch = (x.detach(), labels.detach())
        diff = x - self.centers.to(x.dtype)[labels]
        return self.center_weight * 0.5 * diff.pow(2).sum(dim=1).mean()

    @torch.no_grad()
    def update_centers(self) -> None:
        """Applies the paper rule to the last training batch (once); a no-op for ``update="sgd"``."""
        if self._last_batch is None:
            return
        x, labels = self._last_batch
        self._last_batch = None
        num_classes, dim = self.centers.shape
        stats = torch.zeros(num_classes, dim + 1, dtype=self.centers.dtype, device=self.centers.device)
        stats[:, :dim].index_add_(0, labels, x.to(stats.dtype))
        stats[:, dim].index_add_(0, labels, torch.ones_like(labels, dtype=stats.dtype))
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        present = stats[:, dim].nonzero().squeeze(1)
        sums, counts, centers = stats[present, :dim], stats[present, dim:], self.centers[present]
        self.centers.index_add_(0, present, -self.alpha * (counts * centers - sums) / (1.0 + counts))


class CenterLossMixin:
    """Adds a :class:`CenterLoss` attribute ``center_loss`` to a head's output and optimisation.

    Provides the hooks the training module calls: :meth:`update_after_step` and
    :meth:`param_groups`.
    """

    center_loss: CenterLoss

    def with_center_loss(self, output: HeadOutput, features: Tensor, labels: Tensor) -> HeadOutput:
        """Adds the center loss of (B, E) features and (B,) labels to ``output.loss``."""
        return HeadOutput(loss=output.loss + self.center_loss(features, labels), logits=output.logits)

    def update_after_step(self) -> None:
        """Paper-rule centre update from the last training forward; call after ``optimizer.step()``."""
        self.center_loss.update_centers()

    def param_groups(self) -> list[dict]:
        """All parameters; with ``update="sgd"`` the centres form their own group (lr, no decay)."""
        params = list(self.parameters())
        if self.center_loss.update != "sgd":
            return [{"params": params}]
        centers = self.center_loss.centers
        return [
            {"params": [p for p in params if p is not centers]},
            {"params": [centers], "lr": self.center_loss.center_lr, "weight_decay": 0.0},
        ]
