"""Every class centre in every process, every class in each step's softmax (``classifier=full``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.heads.checks import check_range
from facerec.heads.cosine_linear import scaled_cosine_linear
from facerec.heads.margin import MarginInput
from facerec.heads.numerics import full_precision

INIT_STD = 0.01
"""Centres start N(0, INIT_STD²) (insightface) unless the margin asks for ``nn.Linear``'s initialisation."""


def initial_centres(rows: int, embedding_size: int, bias: bool, linear_init: bool) -> Tensor:
    """(rows, E) centres, with a last bias column (E + 1) when ``bias``.

    ``linear_init``: ``nn.Linear(E, rows)``'s draws, weight then bias (U(±1/√E)); else N(0, 0.01²), bias 0.
    """
    if linear_init:
        weight = torch.empty(rows, embedding_size)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if not bias:
            return weight
        bound = 1.0 / math.sqrt(embedding_size)
        return torch.cat([weight, torch.empty(rows, 1).uniform_(-bound, bound)], dim=1)
    weight = nn.init.normal_(torch.empty(rows, embedding_size), std=INIT_STD)
    return torch.cat([weight, torch.zeros(rows, 1)], dim=1) if bias else weight


class FullColumns:
    """:class:`~facerec.heads.margin.ClassColumns` of a step that sees every class in one process."""

    grad_scale = 1.0

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.num_columns = num_classes

    def sum(self, values: Tensor) -> Tensor:
        """(B, C) → (B,)."""
        return values.sum(dim=1)

    def max(self, values: Tensor) -> Tensor:
        """(B, C) → (B,), no gradient."""
        return values.detach().max(dim=1).values

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of (B, C) logits."""
        return F.cross_entropy(logits, labels)


class FullClassifier(nn.Module):
    """Holds all class centres; gives a margin the cosines of the batch to every class.

    Args:
        embedding_size: E.
        num_classes: C.
        rows_per_class: K centres per class; a class' cosine is the max over its K (sub-center ArcFace).
        bias: Hold a per-class bias (the linear softmax), as the last column of :attr:`weight`.
        linear_init: Initialise as ``nn.Linear`` (see :func:`initial_centres`).

    Attributes:
        weight: (C·K, E), or (C, E + 1) with the bias last; row ``j·K + k`` is centre k of class j.
        full_logits: Logits are (B, C), class-indexed (training accuracy uses their argmax).
        updates_after_step: :meth:`after_optimizer_step` does something.
    """

    full_logits = True
    updates_after_step = False

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        rows_per_class: int = 1,
        bias: bool = False,
        linear_init: bool = False,
    ) -> None:
        super().__init__()
        self._set_layout(embedding_size, num_classes, rows_per_class, bias)
        self.weight = nn.Parameter(initial_centres(num_classes * rows_per_class, embedding_size, bias, linear_init))

    def _set_layout(self, embedding_size: int, num_classes: int, rows_per_class: int, bias: bool) -> None:
        """Checks and stores the centres' layout (before any centre is allocated)."""
        check_range("subcenters", rows_per_class, 1)
        if bias and rows_per_class > 1:
            raise ValueError("a per-class bias (softmax) takes one centre per class; set head.subcenters=1")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.rows_per_class = rows_per_class
        self.has_bias = bias

    @property
    def centres(self) -> Tensor:
        """(C·K, E) the centres: :attr:`weight` itself, or a view of it without the bias column."""
        return self.weight[:, : self.embedding_size] if self.has_bias else self.weight

    @property
    def bias(self) -> Tensor | None:
        """(C,) the per-class bias, or None."""
        return self.weight[:, self.embedding_size] if self.has_bias else None

    def margin_input(self, embeddings: Tensor, labels: Tensor, rows: Tensor, columns: object) -> MarginInput:
        """Cosines of full-precision embeddings (B, E) to ``rows`` (n·K, E or E + 1); ``labels`` (B,) are columns."""
        centres = full_precision(rows[:, : self.embedding_size]).to(embeddings.dtype)
        cos = scaled_cosine_linear(F.normalize(embeddings, dim=1), centres)
        if self.rows_per_class > 1:
            cos = cos.view(cos.shape[0], -1, self.rows_per_class).max(dim=2).values
        bias = full_precision(rows[:, self.embedding_size]).to(embeddings.dtype) if self.has_bias else None
        return MarginInput(
            cos=cos.clamp(-1.0, 1.0),
            labels=labels,
            norms=embeddings.norm(dim=1),
            columns=columns,
            centres=centres if self.rows_per_class == 1 else None,
            bias=bias,
        )

    def forward(self, embeddings: Tensor, labels: Tensor) -> MarginInput:
        """The step's :class:`~facerec.heads.margin.MarginInput` for embeddings (B, E) and labels (B,) in [0, C)."""
        return self.margin_input(embeddings, labels, self.weight, FullColumns(self.num_classes))

    def batch_mean(self, local_mean: Tensor, local_batch: int, batch: int) -> Tensor:
        """Mean of a per-sample term over all ``batch`` samples, from this process' mean; identity here."""
        return local_mean

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups of the centres."""
        return [{"params": [self.weight]}]

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Prepares rank ``rank`` of ``world_size``; returns the parameter names DDP must not sync (none)."""
        return []

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after backward, before ``optimizer.step()``; no-op."""

    def after_optimizer_step(self) -> None:
        """Called after ``optimizer.step()``; no-op."""

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """Clips the whole model's gradient norm if the centres are sharded; False: they are not."""
        return False

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Edits a checkpoint being saved (``prefix``: the classifier's state-dict prefix); no-op."""

    def on_load_checkpoint(self, prefix: str, checkpoint: dict, source: Path | None = None) -> None:
        """Edits a checkpoint read from ``source`` before its weights are loaded; no-op."""
