"""Partial FC: class centres sharded across ranks, sampled softmax (An et al., ICCV 2021 workshops).

With r = 1 loss and gradients equal the full classifier's on the global batch; no rank builds (B, C) logits."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from facerec.distributed import all_reduce, gather_rows, gather_rows_with_grad, rank_and_world_size, scale_grad
from facerec.heads.checks import check_range
from facerec.heads.classifiers.full import FullClassifier
from facerec.heads.classifiers.partial_fc_checkpoint import consolidate_checkpoint, shard_checkpoint
from facerec.heads.classifiers.sampled_rows import SampledRows
from facerec.heads.classifiers.sharded_clipping import clip_grad_norm_sharded_
from facerec.heads.margin import MarginInput


class _DistributedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits split by class across ranks (all-reduced max and exp-sum).

    Takes this rank's logits (B, n) and labels (B,) indexing its columns (−1: another rank's class);
    returns the same loss on every rank; backward gives each rank its own columns' gradient.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, labels: Tensor) -> Tensor:
        row_max = all_reduce(logits.max(dim=1).values, torch.distributed.ReduceOp.MAX)
        exp = (logits - row_max.unsqueeze(1)).exp_()
        exp_sum = all_reduce(exp.sum(dim=1))
        on_shard = labels >= 0
        index = labels.clamp_min(0).unsqueeze(1)
        target = all_reduce(torch.where(on_shard, logits.gather(1, index).squeeze(1), 0.0))
        ctx.save_for_backward(exp.div_(exp_sum.unsqueeze(1)), labels)
        return (exp_sum.log() + row_max - target).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        prob, labels = ctx.saved_tensors
        on_shard = (labels >= 0).nonzero().squeeze(1)
        prob[on_shard, labels[on_shard]] -= 1.0
        return prob * (grad / labels.shape[0]), None


class ShardedColumns:
    """:class:`~facerec.heads.margin.ClassColumns` of one rank's class columns (collectives over ranks)."""

    def __init__(self, num_classes: int, local_columns: int, grad_scale: float) -> None:
        self.num_classes = num_classes
        self.local_columns = local_columns
        self.grad_scale = grad_scale

    @functools.cached_property
    def num_columns(self) -> int:
        """Columns of this step over all ranks (one collective, on first use)."""
        return int(all_reduce(torch.tensor(self.local_columns)).item())

    def sum(self, values: Tensor) -> Tensor:
        """(B, n) → (B,) sum over all ranks' columns; the gradient reaches this rank's columns only."""
        local = values.sum(dim=1)
        total = all_reduce(local.detach().clone())
        return local + (total - local.detach())

    def max(self, values: Tensor) -> Tensor:
        """(B, n) → (B,) max over all ranks' columns, no gradient."""
        return all_reduce(values.detach().max(dim=1).values, torch.distributed.ReduceOp.MAX)

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Global-batch mean cross-entropy over all ranks' columns (distributed log-sum-exp)."""
        return _DistributedCrossEntropy.apply(logits, labels)


class PartialFC(FullClassifier):
    """Class centres sharded across ranks, negatives sampled (``classifier=partial_fc``), for any margin.

    With C classes on W ranks, rank k holds classes ``[k·n, min((k+1)·n, C))``, ``n = ⌈C/W⌉``;
    :attr:`weight` is that shard, the full matrix until :meth:`shard`. Each step gathers all ranks'
    embeddings (with gradient) and labels, keeps the shard's classes present in the global batch plus
    random others up to ``⌈r·shard⌉``, and gives the margin the global batch against those columns
    (so batch statistics equal a single process'). Logits are (B_global, n_sampled), not class-indexed
    (:attr:`full_logits` False); the loss is the global-batch mean, equal on all ranks. Extra loss terms
    (center loss, centres replicated) use each rank's own samples (:meth:`batch_mean`).

    With r < 1 only sampled centres get gradient and optimizer state
    (:class:`~facerec.heads.classifiers.sampled_rows.SampledRows`), so step cost scales with r. The
    optimizer must hold ``head.param_groups()``; outside Lightning call the hooks around each step::

        optimizer = torch.optim.SGD(head.param_groups(), lr=0.1, momentum=0.9)
        head(embeddings, labels).loss.backward()
        head.before_optimizer_step(optimizer)
        optimizer.step()
        head.after_optimizer_step()
        optimizer.zero_grad()

    Checkpoints hold the centres unsharded (:mod:`~facerec.heads.classifiers.partial_fc_checkpoint`), so a
    run resumes at any world size; gradient clipping by norm uses the whole gradient
    (:mod:`~facerec.heads.classifiers.sharded_clipping`).

    Args:
        embedding_size, num_classes, rows_per_class, bias, linear_init: As
            :class:`~facerec.heads.classifiers.full.FullClassifier`.
        sample_rate: r in (0, 1], share of the shard's classes used per step (batch classes always kept).
        rank: This process' rank; default: the process group's, 0 without one.
        world_size: Number of ranks; default: the process group's, 1 without one.

    Attributes:
        embedding_grad_scale: Factor on the gradient to this rank's embeddings: 1 (exact global-batch
            gradient), or the world size after :meth:`setup_distributed` (undoes DDP's averaging).

    Raises:
        ValueError: ``sample_rate`` outside (0, 1], or a rank's shard would be empty.
    """

    full_logits = False

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        rows_per_class: int = 1,
        bias: bool = False,
        linear_init: bool = False,
        sample_rate: float = 1.0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        check_range("classifier.sample_rate", sample_rate, 0.0, 1.0, low_open=True)
        super().__init__(embedding_size, num_classes, rows_per_class, bias, linear_init)
        self.sample_rate = sample_rate
        self.sampled = SampledRows(self.weight) if sample_rate < 1.0 else None
        self.rank, self.world_size = 0, 1
        self.class_start, self.class_end = 0, self.num_classes
        self.embedding_grad_scale = 1.0
        default_rank, default_world = rank_and_world_size()
        self.shard(default_rank if rank is None else rank, default_world if world_size is None else world_size)

    def class_range(self, rank: int, world_size: int) -> tuple[int, int]:
        """``[start, end)`` of the classes rank ``rank`` of ``world_size`` holds."""
        per_rank = math.ceil(self.num_classes / world_size)
        return min(rank * per_rank, self.num_classes), min((rank + 1) * per_rank, self.num_classes)

    def shard(self, rank: int, world_size: int) -> None:
        """Keeps only this rank's slice of the centres; call before building the optimizer.

        Raises:
            ValueError: Already sharded differently, or the shard would be empty.
        """
        if (rank, world_size) == (self.rank, self.world_size):
            return
        if self.world_size != 1:
            raise ValueError(
                f"partial FC centres are already sharded for rank {self.rank} of {self.world_size}; "
                f"build a new head to shard for rank {rank} of {world_size}"
            )
        start, end = self.class_range(rank, world_size)
        if start >= end:
            raise ValueError(
                f"partial FC: {self.num_classes} classes leave rank {rank} of {world_size} no class; "
                "use fewer processes than classes"
            )
        rows = self.weight.data[start * self.rows_per_class : end * self.rows_per_class].clone()
        self.weight = nn.Parameter(rows)
        self.rank, self.world_size, self.class_start, self.class_end = rank, world_size, start, end

    def sample(self, labels: Tensor) -> tuple[Tensor | None, Tensor]:
        """Picks this rank's classes for a step from the global batch's labels (B,).

        Returns:
            ``classes``: sorted (n,) shard-local indices (None: whole shard); ``local_labels``: (B,)
            each label's position in them, −1 for other ranks' classes.
        """
        local = labels - self.class_start
        on_shard = (labels >= self.class_start) & (labels < self.class_end)
        shard_size = self.class_end - self.class_start
        num_sample = math.ceil(self.sample_rate * shard_size)
        if num_sample >= shard_size:
            return None, torch.where(on_shard, local, -1)
        positives = torch.unique(local[on_shard])
        if positives.numel() >= num_sample:
            classes = positives
        else:
            score = torch.rand(shard_size, device=labels.device)
            score[positives] = 2.0
            classes = score.topk(num_sample).indices.sort().values
        return classes, torch.where(on_shard, torch.searchsorted(classes, local.clamp_min(0)), -1)

    def centre_rows(self, classes: Tensor | None) -> Tensor:
        """(n·K,) rows of :attr:`weight` holding the shard-local ``classes`` (None: all rows)."""
        if classes is None:
            return torch.arange(len(self.weight), device=self.weight.device)
        offsets = torch.arange(self.rows_per_class, device=classes.device)
        return (classes.unsqueeze(1) * self.rows_per_class + offsets).flatten()

    def forward(self, embeddings: Tensor, labels: Tensor) -> MarginInput:
        """All ranks' embeddings (B_global, E) against this rank's sampled class columns."""
        x = gather_rows_with_grad(scale_grad(embeddings, self.embedding_grad_scale))
        classes, local_labels = self.sample(gather_rows(labels))
        rows = self.weight if self.sampled is None else self.sampled.take(self.weight, self.centre_rows(classes))
        local_columns = len(rows) // self.rows_per_class
        columns = ShardedColumns(self.num_classes, local_columns, self.embedding_grad_scale)
        return self.margin_input(x, local_labels, rows, columns)

    def batch_mean(self, local_mean: Tensor, local_batch: int, batch: int) -> Tensor:
        """``Σ_ranks local_mean·local_batch/batch`` (all-reduced); gradient via own share × ``embedding_grad_scale``."""
        share = local_mean * (local_batch / batch)
        total = all_reduce(share.detach().clone())
        return scale_grad(share, self.embedding_grad_scale) + (total - share.detach())

    @property
    def updates_after_step(self) -> bool:
        """True with r < 1 (sampled centres are written back after each step)."""
        return self.sampled is not None

    @property
    def trained_centres(self) -> Tensor:
        """Parameter receiving the centres' gradient: the shard, or with r < 1 the sampled rows'."""
        return self.weight if self.sampled is None else self.sampled.param

    def param_groups(self) -> list[dict]:
        """The shard, plus with r < 1 the sampled rows' parameter, in one group."""
        return [{"params": [self.weight] if self.sampled is None else [self.weight, self.sampled.param]}]

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Shards the centres, sets ``embedding_grad_scale = world_size``; returns ``["weight"]`` (not synced)."""
        self.shard(rank, world_size)
        self.embedding_grad_scale = float(world_size)
        return ["weight"]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """With r < 1: moves the sampled centres' optimizer state onto their parameter."""
        if self.sampled is not None:
            self.sampled.before_step(self.weight, optimizer)

    def after_optimizer_step(self) -> None:
        """With r < 1: writes the stepped centres and their optimizer state back."""
        if self.sampled is not None:
            self.sampled.after_step(self.weight)

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """If sharded, clips by the whole gradient's norm (:func:`clip_grad_norm_sharded_`); returns whether it did."""
        if self.world_size == 1:
            return False
        clip_grad_norm_sharded_(parameters, self.trained_centres, max_norm)
        return True

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Stores centres and their optimizer state unsharded, resumable at any world size (collective)."""
        consolidate_checkpoint(self, prefix, checkpoint, list(optimizers))

    def on_load_checkpoint(self, prefix: str, checkpoint: dict) -> None:
        """Slices this rank's centres and optimizer state out of a consolidated checkpoint."""
        shard_checkpoint(self, prefix, checkpoint)

    def full_rows(self, shard: Tensor) -> Tensor:
        """All ranks' slices of a per-row tensor, concatenated in class order (collective)."""
        return gather_rows(shard)

    def local_rows(self, full: Tensor) -> Tensor:
        """This rank's slice of a full (C·K, ...) per-row tensor; ValueError if it has not C·K rows."""
        expected = self.num_classes * self.rows_per_class
        if full.shape[0] != expected:
            raise ValueError(
                f"partial FC: the checkpoint holds {full.shape[0]} centre rows but this head needs {expected} "
                f"({self.num_classes} classes); resume with the training data and head it was trained with"
            )
        return full[self.class_start * self.rows_per_class : self.class_end * self.rows_per_class].clone()
