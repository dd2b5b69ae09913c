"""Collectives for model-parallel heads (Partial FC); identity without a process group. Any backend (gloo
included), batches of different sizes per rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import FunctionCtx


def is_distributed() -> bool:
    """Whether in an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


_PLANNED: ContextVar[tuple[int, int] | None] = ContextVar("planned_rank", default=None)


@contextmanager
def planned_rank(rank: int, world_size: int) -> Iterator[None]:
    """Within the block, :func:`rank_and_world_size` answers ``(rank, world_size)`` while no process group exists.

    For building a model before the trainer starts the group (Lightning's launchers), so that model-parallel
    parts (Partial FC) allocate only this rank's share.
    """
    token = _PLANNED.set((rank, world_size))
    try:
        yield
    finally:
        _PLANNED.reset(token)


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; else the :func:`planned_rank`, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return _PLANNED.get() or (0, 1)


def all_reduce(tensor: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """In-place all-reduce (no gradient); returns ``tensor``."""
    if is_distributed():
        dist.all_reduce(tensor, op=op)
    return tensor


def _row_counts(tensor: Tensor) -> list[int]:
    """Every rank's ``tensor.shape[0]``, in rank order."""
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.empty_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    return [int(c) for c in counts]


def gather_rows(tensor: Tensor, counts: list[int] | None = None) -> Tensor:
    """Every rank's (N_r, ...) ``tensor`` concatenated along dim 0 in rank order (no gradient).

    Rows are padded to max N_r for the collective; ``counts`` (every N_r) saves one collective if known.
    """
    if not is_distributed():
        return tensor
    counts = _row_counts(tensor) if counts is None else counts
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    """:func:`gather_rows` whose backward gives each rank its rows of the all-reduced gradient (every rank's loss
    depends on every rank's rows).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, tensor: Tensor) -> Tensor:
        counts = _row_counts(tensor)
        ctx.start = sum(counts[: dist.get_rank()])
        ctx.count = tensor.shape[0]
        return gather_rows(tensor, counts)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.count]


def gather_rows_with_grad(tensor: Tensor) -> Tensor:
    """:func:`gather_rows` with the gradient flowing back to each rank's own rows."""
    return _GatherWithGrad.apply(tensor) if is_distributed() else tensor


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient times a constant."""

    @staticmethod
    def forward(ctx: FunctionCtx, tensor: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(tensor: Tensor, factor: float) -> Tensor:
    """``tensor`` unchanged, its gradient multiplied by ``factor`` (any shape)."""
    return tensor if factor == 1.0 else _ScaleGrad.apply(tensor, factor)
