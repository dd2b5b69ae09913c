"""Partial FC: class centres sharded across ranks, sampled softmax (An et al., ICCV 2021 workshops).

With C classes over W ranks, rank k holds the centres of classes ``[k·n, min((k+1)·n, C))``,
``n = ⌈C/W⌉``. Each step gathers the embeddings (with gradient) and labels of all ranks, keeps on
every rank the classes of its shard that occur in the global batch plus random others up to
``⌈r·shard⌉`` (r = ``sample_rate``), computes the head's margin logits against those centres
only, and the cross-entropy over all shards with a distributed log-sum-exp in float32/float64.
No rank materialises the (B, C) logits. A head's center loss (``arcface_center``) keeps its centres
whole on every rank and is computed on each rank's own samples. With r = 1 the loss and gradients
equal those of the full classifier on the global batch.
"""

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
"""Checkpoint entry recording where the sharded centres' optimizer state is."""


class _DistributedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of logits split by class across ranks.

    Each rank passes its (B, n) logits and (B,) labels indexing its columns (−1: the class is on
    another rank). Row maxima and exp-sums are all-reduced, so every rank returns the same loss;
    the backward gives each rank the gradient of its own columns.
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
    """A margin head's class centres sharded across ranks, with the negative classes sampled.

    Takes over a full :class:`~facerec.heads.classifier.Classifier`'s centres (``head.classifier =
    PartialFC(head.classifier, r)``, what ``classifier=partial_fc`` does): :attr:`weight` is the local
    shard ``(K · classes on this rank, E)``, the full matrix until :meth:`shard` is called. The head's
    margin is applied on every rank to the whole global batch, so norm-aware margins (AdaFace) see the
    same batch statistics as a single process.

    The cosines span **this rank's sampled columns only**, (B_global, n_sampled), not class-indexed
    logits (:attr:`full_logits` is False, so callers skip argmax accuracy); the cross-entropy is the
    global-batch mean, equal on all ranks. A head's per-sample terms (the center loss, its centres
    replicated on every rank) are computed on each rank's own samples: :meth:`batch_mean`.

    With r < 1 only the sampled centres are trained each step (:class:`~facerec.heads.sampled_rows.
    SampledRows`): they get the gradient and the optimizer state, the others stay as they are, so the
    step's memory and time scale with r. The optimizer must hold the head's ``param_groups()`` and a
    loop outside Lightning calls the head's hooks around each step::

        optimizer = torch.optim.SGD(head.param_groups(), lr=0.1, momentum=0.9)
        head(embeddings, labels).loss.backward()
        head.before_optimizer_step(optimizer)
        optimizer.step()
        head.update_after_step()
        optimizer.zero_grad()

    Args:
        centres: The full classifier whose centres to shard (a margin head's ``classifier``).
        sample_rate: r in (0, 1], the share of the shard's classes used per step; the classes of
            the batch are always kept, even beyond r.
        rank: This process' rank; default: the process group's, 0 without one.
        world_size: Number of ranks; default: the process group's, 1 without one.

    Attributes:
        embedding_grad_scale: Factor on the gradient flowing back to this rank's embeddings (1 by
            default: the exact gradient of the global-batch loss). :meth:`setup_distributed` sets it
            to the world size, as DDP's gradient averaging then gives the global-batch gradient.

    Raises:
        TypeError: If ``centres`` is not a :class:`~facerec.heads.classifier.Classifier` (``softmax`` and
            ``center`` have a plain linear layer, no margin).
        ValueError: If ``sample_rate`` is outside (0, 1], or a rank's shard would be empty.
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
        """Keeps only this rank's slice of the full centres; call once, before building the optimizer.

        Raises:
            ValueError: If the centres are already sharded differently, or the shard would be empty.
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
        """Picks this rank's classes for a step.

        Args:
            labels: (B,) global class indices of the global batch.

        Returns:
            ``(classes, local_labels)``: sorted (n,) shard-local class indices (None: all of the
            shard) and (B,) positions of each label in them, −1 for classes of other ranks.
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
        """Gathers the global batch and gives its scaled cosines to this rank's sampled classes.

        Args:
            embeddings: (B, E) this rank's full-precision features.
            labels: (B,) int64 global class indices in [0, C).
            scale: s.

        Returns:
            (B_global, n_sampled) scaled cosines, the (B_global,) labels' columns (−1: another rank's
            class) and the (B_global, E) gathered embeddings.
        """
        x = gather_rows_with_grad(scale_grad(embeddings, self.embedding_grad_scale))
        classes, local_labels = self.sample(gather_rows(labels))
        rows = self.weight if self.sampled is None else self.sampled.take(self.weight, self.centre_rows(classes))
        return Cosines(self.class_cosines(x, scale, rows), local_labels, x)

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The global batch's mean cross-entropy over all ranks' columns (a distributed log-sum-exp)."""
        return _DistributedCrossEntropy.apply(logits, labels)

    def batch_mean(self, local_mean: Tensor, local_batch: int, batch: int) -> Tensor:
        """The global-batch mean of a per-sample term from this rank's own mean.

        Each rank computes ``share = local_mean · B_local / B_global``; the value returned is the
        all-reduced ``Σ_ranks share``, the same on every rank; its gradient is ``embedding_grad_scale ·
        ∂share`` alone (the other ranks' part is a detached constant). With scale 1 that is this
        rank's part of the exact gradient, like the margin term's; with scale W (under DDP) DDP's
        average over ranks gives the backbone and replicated parameters (``update="sgd"`` centres)
        the exact global-batch gradient, for any split of the batch.

        Args:
            local_mean: Scalar, the term's mean over this rank's ``local_batch`` samples.
            local_batch: B_local.
            batch: B_global, the samples of all ranks.
        """
        share = local_mean * (local_batch / batch)
        total = all_reduce(share.detach().clone())
        return scale_grad(share, self.embedding_grad_scale) + (total - share.detach())

    @property
    def updates_after_step(self) -> bool:
        """With r < 1 the sampled centres are written back after each step."""
        return self.sampled is not None

    @property
    def trained_centres(self) -> Tensor:
        """The parameter that gets the centres' gradient: the shard, or with r < 1 the sampled rows' small one."""
        return self.weight if self.sampled is None else self.sampled.param

    def optimized_parameters(self) -> list[Tensor]:
        """The centre shard, and with r < 1 the small parameter the sampled centres are trained in."""
        return [self.weight] if self.sampled is None else [self.weight, self.sampled.param]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """With r < 1: moves the sampled centres' optimizer state onto the small parameter the optimizer steps."""
        if self.sampled is not None:
            self.sampled.before_step(self.weight, optimizer)

    def after_optimizer_step(self) -> None:
        """With r < 1: writes the stepped centres and their optimizer state back."""
        if self.sampled is not None:
            self.sampled.after_step(self.weight)

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Keeps this rank's shard of the centres; DDP must not sync them (each rank holds other classes).

        The loss is the global-batch mean and DDP averages the backbone gradients over ranks, so the
        gradient to this rank's embeddings is scaled by the world size.
        """
        self.shard(rank, world_size)
        self.embedding_grad_scale = float(world_size)
        return ["weight"]

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """With sharded centres, clips by the whole gradient's norm (:func:`clip_grad_norm_sharded_`)."""
        if self.world_size == 1:
            return False
        clip_grad_norm_sharded_(parameters, self.trained_centres, max_norm)
        return True

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Stores the centres (and their optimizer state) whole, for any world size to resume (collective)."""
        consolidate_checkpoint(self, prefix, checkpoint, list(optimizers))

    def on_load_checkpoint(self, prefix: str, checkpoint: dict) -> None:
        """Slices this rank's centres (and their optimizer state) out of a consolidated checkpoint."""
        shard_checkpoint(self, prefix, checkpoint)

    def full_rows(self, shard: Tensor) -> Tensor:
        """All ranks' (rows, ...) slices of a per-row tensor (the centres, their optimizer state) in class order."""
        return gather_rows(shard)

    def local_rows(self, full: Tensor) -> Tensor:
        """This rank's slice of a full (C·K, ...) per-row tensor.

        Raises:
            ValueError: If ``full`` does not have ``num_classes · rows_per_class`` rows.
        """
        expected = self.num_classes * self.rows_per_class
        if full.shape[0] != expected:
            raise ValueError(
                f"partial FC: the checkpoint holds {full.shape[0]} centre rows but this head needs {expected} "
                f"({self.num_classes} classes); resume with the training data and head it was trained with"
            )
        return full[self.class_start * self.rows_per_class : self.class_end * self.rows_per_class].clone()


def clip_grad_norm_sharded_(parameters: Iterable[Tensor], shard: Tensor, max_norm: float) -> Tensor:
    """:func:`torch.nn.utils.clip_grad_norm_` (2-norm) when one parameter is sharded across ranks.

    The norm is that of the whole gradient, ``√(Σ_other ‖g‖² + Σ_ranks ‖g_shard‖²)``: the other
    parameters' gradients are the same on every rank (DDP has averaged them), the shards' squared
    norms are all-reduced. Every rank then scales its gradients by the same coefficient,
    ``min(1, max_norm / (norm + 1e-6))``, as one process holding all centres would. Collective:
    every rank must call it.

    Args:
        parameters: Every optimised parameter, ``shard`` included; those without gradient are skipped.
        shard: This rank's slice of the sharded parameter (the Partial FC centres).
        max_norm: The largest norm kept.

    Returns:
        The whole gradient's norm before clipping (scalar).
    """
    parameters = [p for p in parameters if p.grad is not None]
    others = get_total_norm([p.grad for p in parameters if p is not shard]).to(shard.device)
    shard_norm = get_total_norm([] if shard.grad is None else [shard.grad]).to(shard.device)
    norm = (others.square() + all_reduce(shard_norm.square())).sqrt()
    clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


def _optimizer_slot(optimizers: list[torch.optim.Optimizer], parameter: Tensor) -> tuple[int, int] | None:
    """(optimizer index, parameter index in its state dict) of ``parameter``, None if not optimised."""
    for opt_index, optimizer in enumerate(optimizers):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for param_index, param in enumerate(params):
            if param is parameter:
                return opt_index, param_index
    return None


def _per_row_state(state: Mapping, rows: int) -> list[str]:
    """Keys of an optimizer state entry that hold one row per centre row (momentum, Adam moments)."""
    return [key for key, value in state.items() if is_per_row(value, rows)]


def consolidate_checkpoint(
    classifier: PartialFC, prefix: str, checkpoint: dict, optimizers: list[torch.optim.Optimizer]
) -> None:
    """Replaces this rank's centre shard and its optimizer state in ``checkpoint`` by the full ones.

    Collective: every rank must call it (Lightning dumps checkpoints on all ranks and writes rank 0's).
    The checkpoint then holds world-size-independent (C·rows_per_class, E) centres.

    Args:
        classifier: The partial FC classifier.
        prefix: Its state-dict prefix, e.g. ``"head.classifier."``.
        checkpoint: Lightning checkpoint dict (``state_dict``, ``optimizer_states``), edited in place.
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
    """Slices a consolidated checkpoint's centres and their optimizer state for this rank, in place.

    Any world size can resume any other's checkpoint: the centres are stored whole.

    Raises:
        ValueError: If the checkpoint's centres do not match the classifier's class count, or it has
            optimizer state for them but was not written by a partial FC classifier of the same kind
            (sampled rows for r < 1, the shard itself for r = 1).
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
