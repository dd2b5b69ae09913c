"""Partial FC: class centres sharded across ranks, sampled softmax (An et al., ICCV 2021 workshops).

With r = 1 loss and gradients equal the full classifier's on the global batch; no rank builds (B, C) logits."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from facerec.distributed import all_reduce, gather_rows, gather_rows_with_grad, rank_and_world_size, scale_grad
from facerec.heads.checks import check_range
from facerec.heads.classifiers.full import FullClassifier
from facerec.heads.classifiers.partial_fc_checkpoint import prepare_save, take_rows
from facerec.heads.classifiers.sampled_rows import SampledRows
from facerec.heads.classifiers.seeded_rows import draw_seed, seeded_centre_rows
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


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, end)`` of the classes rank ``rank`` of ``world_size`` holds, sized as insightface's Partial FC:
    ``C // W`` classes each, one more for the first ``C mod W`` ranks."""
    per_rank, extra = divmod(num_classes, world_size)
    start = per_rank * rank + min(rank, extra)
    return start, start + per_rank + int(rank < extra)


class PartialFC(FullClassifier):
    """Class centres sharded across ranks, negatives sampled (``classifier=partial_fc``), for any margin.

    With C classes on W ranks, rank k holds the classes of :func:`shard_range` (insightface's split) and
    creates only their centres: rows are drawn block by block from generators seeded from one draw of torch's
    default generator (:mod:`~facerec.heads.classifiers.seeded_rows`), so the same seed gives the same centres
    at any world size. The rank is the process group's, else the one planned by
    :func:`facerec.distributed.planned_rank` (``train.py`` builds the model inside it), else 0 of 1.
    :attr:`weight` is that shard.

    Each step gathers all ranks' embeddings (with gradient) and labels, keeps the shard's classes present in
    the global batch plus random others up to ``int(r·shard)`` (drawn on the CPU as insightface does, so a
    seed samples the same classes on any device), and gives the margin the global batch against those columns
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

    One process checkpoints every centre in the checkpoint; several write one shard file each beside it, and
    any world size resumes either (:mod:`~facerec.heads.classifiers.partial_fc_checkpoint`). Gradient
    clipping by norm uses the whole gradient (:mod:`~facerec.heads.classifiers.sharded_clipping`).

    Args:
        embedding_size, num_classes, rows_per_class, bias, linear_init: As
            :class:`~facerec.heads.classifiers.full.FullClassifier`.
        sample_rate: r in (0, 1], share of the shard's classes used per step (batch classes always kept).
        rank: This process' rank; default: see above.
        world_size: Number of ranks; default: see above.

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
        nn.Module.__init__(self)  # not FullClassifier's: it would create every centre
        self._set_layout(embedding_size, num_classes, rows_per_class, bias)
        self.sample_rate = sample_rate
        self.embedding_grad_scale = 1.0
        default_rank, default_world = rank_and_world_size()
        rank = default_rank if rank is None else rank
        world_size = default_world if world_size is None else world_size
        self.rank, self.world_size, (self.class_start, self.class_end) = rank, world_size, self._range(rank, world_size)
        rows = seeded_centre_rows(
            draw_seed(), *self._rows(self.class_start, self.class_end), embedding_size, bias, linear_init
        )
        self.weight = nn.Parameter(rows)
        self.sampled = SampledRows(self.weight) if sample_rate < 1.0 else None

    def _range(self, rank: int, world_size: int) -> tuple[int, int]:
        """:func:`shard_range`; ValueError if it is empty."""
        start, end = shard_range(self.num_classes, rank, world_size)
        if start >= end:
            raise ValueError(
                f"partial FC: {self.num_classes} classes leave rank {rank} of {world_size} no class; "
                "use fewer processes than classes"
            )
        return start, end

    def _rows(self, class_start: int, class_end: int) -> tuple[int, int]:
        return class_start * self.rows_per_class, class_end * self.rows_per_class

    @property
    def row_range(self) -> tuple[int, int]:
        """``[start, end)`` of this shard's rows in the whole (C·K, E) centre matrix."""
        return self._rows(self.class_start, self.class_end)

    def class_range(self, rank: int, world_size: int) -> tuple[int, int]:
        """``[start, end)`` of the classes rank ``rank`` of ``world_size`` holds (:func:`shard_range`)."""
        return shard_range(self.num_classes, rank, world_size)

    def shard(self, rank: int, world_size: int) -> None:
        """Keeps only rank ``rank``'s slice of the centres this head holds whole (built for one process).

        Raises:
            ValueError: Already sharded differently, or the shard would be empty.
        """
        if (rank, world_size) == (self.rank, self.world_size):
            return
        if self.world_size != 1:
            raise ValueError(
                f"partial FC centres are already sharded for rank {self.rank} of {self.world_size}; "
                f"build the model in each process (Lightning's default launcher, or inside "
                f"facerec.distributed.planned_rank) to shard for rank {rank} of {world_size}"
            )
        start, end = self._range(rank, world_size)
        low, high = self._rows(start, end)
        self.weight = nn.Parameter(self.weight.data[low:high].clone())
        self.rank, self.world_size, self.class_start, self.class_end = rank, world_size, start, end

    def sample(self, labels: Tensor) -> tuple[Tensor | None, Tensor]:
        """Picks this rank's classes for a step from the global batch's labels (B,), as insightface does.

        With r < 1: the shard's classes in the batch; if there are at most ``max(1, int(r·shard))`` of them,
        the rest up to that count are the top of ``torch.rand(shard)`` drawn from torch's default CPU generator
        (insightface's rule: the same classes for a seed on any device).

        Returns:
            ``classes``: sorted (n,) shard-local indices (None: whole shard, r = 1); ``local_labels``: (B,)
            each label's position in them, −1 for other ranks' classes.
        """
        local = labels - self.class_start
        on_shard = (labels >= self.class_start) & (labels < self.class_end)
        if self.sampled is None:
            return None, torch.where(on_shard, local, -1)
        shard_size = self.class_end - self.class_start
        num_sample = max(1, int(self.sample_rate * shard_size))
        positives = torch.unique(local[on_shard])
        if positives.numel() > num_sample:
            classes = positives
        else:
            score = torch.rand(shard_size).to(labels.device)
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
        """One process: keeps every centre in ``checkpoint``; sharded: leaves this rank's rows for the strategy
        to write beside it (:func:`~facerec.heads.classifiers.partial_fc_checkpoint.prepare_save`)."""
        prepare_save(self, prefix, checkpoint, list(optimizers))

    def on_load_checkpoint(self, prefix: str, checkpoint: dict, source: Path | None = None) -> None:
        """Puts this rank's centres and optimizer state into a checkpoint read from ``source``, of any world size."""
        take_rows(self, prefix, checkpoint, source)

    def local_rows(self, full: Tensor) -> Tensor:
        """This rank's slice of a full (C·K, ...) per-row tensor."""
        return full[slice(*self.row_range)].clone()
