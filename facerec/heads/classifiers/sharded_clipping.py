"""Gradient-norm clipping when one parameter (Partial FC's centres) is sharded across ranks."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from facerec.distributed import all_reduce


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
