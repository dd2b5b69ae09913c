"""Partial FC: class centres sharded across ranks, sampled softmax (An et al., ICCV 2021 workshops).

With r = 1 loss and gradients equal the full classifier's on the global batch; no rank builds (B, C) logits."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from facerec.distributed import all_reduce, gather_rows, gather_rows_with_grad, rank_and_world_size, scale_grad
from facerec.heads.classifier import Classifier, Cosines
from facerec.heads.sampled_rows import SampledRows, is_per_row

CHECKPOINT_KEY = "partial_fc"
"""Checkpoint entry recording the centres' optimizer slot and whether rows were sampled."""


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


class PartialFC(Classifier):
    """A margin head's class centres sharded across ranks, negatives sampled (``classifier=partial_fc``).

    With C classes on W ranks, rank k holds classes ``[k·n, min((k+1)·n, C))``, ``n = ⌈C/W⌉``;
    :attr:`weight` is that shard (K·classes, E), the full matrix until :meth:`shard`. Each step gathers
    all ranks' embeddings (with gradient) and labels, keeps the shard's classes present in the global
    batch plus random others up to ``⌈r·shard⌉``, and applies the margin to the global batch (so AdaFace
    sees single-process batch statistics). Logits are (B_global, n_sampled), not class-indexed
    (:attr:`full_logits` False); the loss is the global-batch mean, equal on all ranks. Per-sample terms
    (center loss, centres replicated) use each rank's own samples (:meth:`batch_mean`).

    With r < 1 only sampled centres get gradient and optimizer state
    (:class:`~facerec.heads.sampled_rows.SampledRows`), so step cost scales with r. The optimizer must
    hold ``head.param_groups()``; outside Lightning call the hooks around each step::

        optimizer = torch.optim.SGD(head.param_groups(), lr=0.1, momentum=0.9)
        head(embeddings, labels).loss.backward()
        head.before_optimizer_step(optimizer)
        optimizer.step()
        head.update_after_step()
        optimizer.zero_grad()

    Args:
        centres: The full classifier to shard (a margin head's ``classifier``).
        sample_rate: r in (0, 1], share of the shard's classes used per step (batch classes always kept).
        rank: This process' rank; default: the process group's, 0 without one.
        world_size: Number of ranks; default: the process group's, 1 without one.

    Attributes:
        embedding_grad_scale: Factor on the gradient to this rank's embeddings: 1 (exact global-batch
            gradient), or the world size after :meth:`setup_distributed` (undoes DDP's averaging).

    Raises:
        TypeError: ``centres`` is not a plain :class:`~facerec.heads.classifier.Classifier` (e.g. the
            linear layer of ``softmax``/``center``).
        ValueError: ``sample_rate`` outside (0, 1], or a rank's shard would be empty.
    """

    full_logits = False

    def __init__(
        self, centres: Classifier, sample_rate: float = 1.0, rank: int | None = None, world_size: int | None = None
    ) -> None:
        if not isinstance(centres, Classifier) or isinstance(centres, PartialFC):
            raise TypeError(
                "partial FC shards a margin head's classifier (arcface, arcface_center, cosface, combined, "
                f"subcenter_arcface, adaface), got {type(centres).__name__} (softmax and center have no margin); "
                "use classifier=full"
            )
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"partial FC sample_rate must be in (0, 1], got {sample_rate}")
        weight = centres.weight.detach().clone()
        super().__init__(centres.embedding_size, centres.num_classes, centres.rows_per_class, weight)
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

    def forward(self, embeddings: Tensor, labels: Tensor, scale: float) -> Cosines:
        """Scaled cosines (B_global, n_sampled) of all ranks' embeddings (B, E) to this rank's sampled classes."""
        x = gather_rows_with_grad(scale_grad(embeddings, self.embedding_grad_scale))
        classes, local_labels = self.sample(gather_rows(labels))
        rows = self.weight if self.sampled is None else self.sampled.take(self.weight, self.centre_rows(classes))
        return Cosines(self.class_cosines(x, scale, rows), local_labels, x)

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Global-batch mean cross-entropy over all ranks' columns (distributed log-sum-exp)."""
        return _DistributedCrossEntropy.apply(logits, labels)

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

    def optimized_parameters(self) -> list[Tensor]:
        """The shard, plus with r < 1 the sampled rows' parameter."""
        return [self.weight] if self.sampled is None else [self.weight, self.sampled.param]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """With r < 1: moves the sampled centres' optimizer state onto their parameter."""
        if self.sampled is not None:
            self.sampled.before_step(self.weight, optimizer)

    def after_optimizer_step(self) -> None:
        """With r < 1: writes the stepped centres and their optimizer state back."""
        if self.sampled is not None:
            self.sampled.after_step(self.weight)

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Shards the centres, sets ``embedding_grad_scale = world_size``; returns ``["weight"]`` (not synced)."""
        self.shard(rank, world_size)
        self.embedding_grad_scale = float(world_size)
        return ["weight"]

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


def clip_grad_norm_sharded_(parameters: Iterable[Tensor], shard: Tensor, max_norm: float) -> Tensor:
    """:func:`torch.nn.utils.clip_grad_norm_` (2-norm) with ``shard`` sharded across ranks (collective).

    Norm ``√(Σ_other ‖g‖² + Σ_ranks ‖g_shard‖²)``; returns it (scalar, before clipping).
    """
    parameters = [p for p in parameters if p.grad is not None]
    others = get_total_norm([p.grad for p in parameters if p is not shard]).to(shard.device)
    shard_norm = get_total_norm([] if shard.grad is None else [shard.grad]).to(shard.device)
    norm = (others.square() + all_reduce(shard_norm.square())).sqrt()
    clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


def _optimizer_slot(optimizers: list[torch.optim.Optimizer], parameter: Tensor) -> tuple[int, int] | None:
    """(optimizer index, index in its state dict) of ``parameter``; None if not optimised."""
    for opt_index, optimizer in enumerate(optimizers):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for param_index, param in enumerate(params):
            if param is parameter:
                return opt_index, param_index
    return None


def _per_row_state(state: Mapping, rows: int) -> list[str]:
    """Keys of an optimizer state entry with one row per centre row (momentum, Adam moments)."""
    return [key for key, value in state.items() if is_per_row(value, rows)]


def consolidate_checkpoint(
    classifier: PartialFC, prefix: str, checkpoint: dict, optimizers: list[torch.optim.Optimizer]
) -> None:
    """Replaces the centre shard and its optimizer state in ``checkpoint`` by the full (C·K, E) ones.

    Collective (Lightning dumps on all ranks, writes rank 0's).

    Args:
        classifier: The Partial FC classifier.
        prefix: Its state-dict prefix, e.g. ``"head.classifier."``.
        checkpoint: Lightning checkpoint dict, edited in place.
        optimizers: The trainer's optimizers, in ``optimizer_states`` order.
    """
    key = f"{prefix}weight"
    rows = classifier.weight.shape[0]
    checkpoint["state_dict"][key] = classifier.full_rows(checkpoint["state_dict"][key])
    slot = _optimizer_slot(optimizers, classifier.weight)
    checkpoint[CHECKPOINT_KEY] = {"optimizer_slot": slot, "sampled_rows": classifier.sampled is not None}
    if slot is None or not checkpoint.get("optimizer_states"):
        return
    state = checkpoint["optimizer_states"][slot[0]]["state"].get(slot[1], {})
    for name in _per_row_state(state, rows):
        state[name] = classifier.full_rows(state[name])


def shard_checkpoint(classifier: PartialFC, prefix: str, checkpoint: dict) -> None:
    """Slices a consolidated checkpoint's centres and optimizer state for this rank, in place.

    Raises:
        ValueError: Centre count differs from the classifier's, or the checkpoint has optimizer state
            but was not written by Partial FC with the same kind of sample rate (r < 1 vs r = 1).
    """
    key = f"{prefix}weight"
    full = checkpoint["state_dict"][key]
    checkpoint["state_dict"][key] = classifier.local_rows(full)
    if not checkpoint.get("optimizer_states"):
        return
    if CHECKPOINT_KEY not in checkpoint:
        raise ValueError(
            "partial FC: this checkpoint was written without partial FC, so its optimizer state does not "
            "fit the sharded centres; resume it with classifier=full, or start a new run from its weights"
        )
    sampled = checkpoint[CHECKPOINT_KEY].get("sampled_rows", False)
    if sampled != (classifier.sampled is not None):
        written = "below 1" if sampled else "1 (or by a facerec whose Partial FC gave every centre a gradient)"
        raise ValueError(
            f"partial FC: this checkpoint was written with classifier.sample_rate {written}; its optimizer "
            f"state has {'a' if sampled else 'no'} slot for the sampled centres. Resume it with "
            f"classifier.sample_rate {'below 1' if sampled else '1.0'}, or start a new run from its weights"
        )
    slot = checkpoint[CHECKPOINT_KEY]["optimizer_slot"]
    if slot is None:
        return
    state = checkpoint["optimizer_states"][slot[0]]["state"].get(slot[1], {})
    for name in _per_row_state(state, len(full)):
        state[name] = classifier.local_rows(state[name])
