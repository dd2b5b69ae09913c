"""What a logit transform (a margin) sees and returns: :class:`MarginInput` → logits, :class:`Margin`.

A head is a classifier (``facerec.heads.classifiers``: which class centres a step sees and how they are
held), a margin (this module: cosines → logits), a classification loss (``facerec.heads.losses``) and
optional extra loss terms (``facerec.heads.terms``). A margin sees the step's cosines as columns: all C
classes with ``classifier=full``; under Partial FC each rank sees the global batch against its own
(sampled) class columns, and :class:`ClassColumns` reduces over every rank's columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from facerec.heads.checks import check_range


class ClassColumns(Protocol):
    """Reductions over the class axis of one step's (B, n) columns, across ranks under Partial FC.

    Attributes:
        num_classes: C, the number of identities.
        num_columns: Class columns this step sees, summed over ranks (C, or fewer when sampled).
        grad_scale: Factor a margin applies (:func:`facerec.distributed.scale_grad`) to its replicated
            parameters that act on class columns, so DDP's average over ranks gives their sum (1 without
            a process group).
    """

    num_classes: int
    num_columns: int
    grad_scale: float

    def sum(self, values: Tensor) -> Tensor:
        """(B, n) → (B,) sum over every rank's columns; the gradient reaches this rank's columns."""

    def max(self, values: Tensor) -> Tensor:
        """(B, n) → (B,) max over every rank's columns, no gradient."""

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean softmax cross-entropy over the batch of (B, n) logits whose target columns are ``labels``."""


@dataclass
class MarginInput:
    """One step's cosines as a margin sees them (full precision, autocast off).

    Attributes:
        cos: (B, n) cos θ in [-1, 1] of each sample to each class column; differentiable.
        labels: (B,) int64 column of each sample's class, −1 where another rank holds it (Partial FC).
        norms: (B,) ‖x‖ of the embeddings; differentiable (norm-aware margins: AdaFace, MagFace).
        columns: Reductions over every rank's columns (:class:`ClassColumns`).
        centres: (n, E) each column's centre, differentiable (read by :meth:`centre_norms`); None with
            several sub-centres per class.
        bias: (n,) per-column bias when the head has one (``softmax``), else None.
    """

    cos: Tensor
    labels: Tensor
    norms: Tensor
    columns: ClassColumns
    centres: Tensor | None
    bias: Tensor | None = None

    def centre_norms(self) -> Tensor | None:
        """(n,) ‖w_j‖ of each column's centre, differentiable (linear softmax logits); computed on demand."""
        return None if self.centres is None else self.centres.norm(dim=1)

    @property
    def held(self) -> Tensor:
        """(B,) bool: this rank holds the sample's class column."""
        return self.labels >= 0

    def target(self, values: Tensor) -> Tensor:
        """(B, n) → (B,) each sample's value in its class column, 0 where not held; differentiable."""
        picked = values.gather(1, self.labels.clamp_min(0).unsqueeze(1)).squeeze(1)
        return torch.where(self.held, picked, torch.zeros_like(picked))

    def target_cos(self) -> Tensor:
        """(B,) cos θ_y of every sample on every rank, detached (for statistics and masks)."""
        with torch.no_grad():
            if self.columns.num_columns == self.cos.shape[1]:  # every column is here: no collective
                return self.target(self.cos)
            return self.columns.sum(self.target_mask().to(self.cos.dtype) * self.cos)

    def target_mask(self) -> Tensor:
        """(B, n) bool, True at each held sample's class column."""
        mask = torch.zeros_like(self.cos, dtype=torch.bool)
        rows = self.held.nonzero().squeeze(1)
        mask[rows, self.labels[rows]] = True
        return mask

    def with_target(self, values: Tensor, target: Tensor) -> Tensor:
        """(B, n) ``values`` with each held sample's class column replaced by ``target`` (B,); a copy."""
        rows = self.held.nonzero().squeeze(1)
        return values.index_put((rows, self.labels[rows]), target[rows].to(values.dtype))


class Margin(nn.Module, ABC):
    """Logit transform: a step's :class:`MarginInput` → (B, n) logits for the classification loss.

    Subclasses implement :meth:`forward`; :meth:`after_optimizer_step` is optional (state changed once per
    optimizer step rather than per forward). Keep running statistics in buffers and compute them from
    ``MarginInput`` reductions, so every rank holds the same state. Register with
    :func:`facerec.heads.register_margin` to make ``conf/margin/<name>.yaml`` loadable from checkpoints.

    Attributes:
        class_bias: The classifier holds a per-class bias for this margin (``MarginInput.bias``).
        linear_init: Initialise the centres as ``nn.Linear`` does (U(±1/√E)) rather than N(0, 0.01²).
        updates_after_step: :meth:`after_optimizer_step` does something.
        sampling: Under Partial FC with r < 1: ``"exact"``, the margin of the sampled classes' sub-problem;
            ``"estimate"``, a statistic over all classes is estimated from the sampled ones (AdaCos);
            ``"refused"``, the math needs every class and the head refuses r < 1 (SphereFace2).
    """

    class_bias: bool = False
    sampling: str = "exact"
    linear_init: bool = False

    @abstractmethod
    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) logits from the step's cosines."""

    def after_optimizer_step(self, skipped: bool = False) -> None:
        """Called after every optimizer step (``skipped``: its gradients were dropped); no-op by default."""

    def default_loss(self) -> nn.Module | None:
        """The classification loss this margin's logits need (a head refuses another kind); None: any,
        cross-entropy by default."""
        return None

    @property
    def updates_after_step(self) -> bool:
        """Whether the subclass overrides :meth:`after_optimizer_step`."""
        return type(self).after_optimizer_step is not Margin.after_optimizer_step


class TargetMargin(Margin):
    """Margin that changes only the target logit: ``s·cos θ_j``, target ``s·target_logit(cos θ_y, ‖x‖)``.

    Args:
        scale: s > 0, the logit scale.
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        check_range("margin.scale", scale, 0.0, low_open=True, high_open=True)
        self.scale = scale

    @abstractmethod
    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """Unscaled target logit (B,) from target cosines (B,) and embedding norms (B,)."""

    def forward(self, inputs: MarginInput) -> Tensor:
        """``s·cos`` (B, n) with the held targets replaced by ``s·target_logit``."""
        target = self.target_logit(inputs.target(inputs.cos), inputs.norms)
        return self.scale * inputs.with_target(inputs.cos, target)
