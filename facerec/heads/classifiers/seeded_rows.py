"""Initial class centres drawn block by block from seeded generators: any shard draws only its own rows,
and the rows of a class are the same whichever rank holds them (Partial FC at any world size)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.classifiers.full import INIT_STD

BLOCK_ROWS = 32_768
"""Rows per generator: a shard draws at most two blocks beyond its own rows (the bounded init chunk)."""
_SEED_STRIDE = 0x9E3779B97F4A7C15
"""Odd 64-bit constant spreading block indices over the seed space (golden-ratio hashing)."""


def draw_seed() -> int:
    """A base seed from torch's default CPU generator (equal on every rank after ``seed_everything``)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def _block_generator(seed: int, block: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed + block * _SEED_STRIDE) % 2**64)


def seeded_centre_rows(
    seed: int, start: int, end: int, embedding_size: int, bias: bool = False, linear_init: bool = False
) -> Tensor:
    """Rows ``[start, end)`` (n, E), or (n, E + 1) with a last bias column, of the centres seeded by ``seed``.

    Each block of :data:`BLOCK_ROWS` rows is drawn from its own generator, as
    :func:`~facerec.heads.classifiers.full.initial_centres` draws its distribution: N(0, INIT_STD²) with bias 0,
    or with ``linear_init`` ``nn.Linear``'s U(±1/√E) for weight and bias. Equal rows for any ``start``/``end``
    covering them; memory: the n rows plus one block.
    """
    columns = embedding_size + int(bias)
    rows = torch.empty(end - start, columns)
    bound = 1.0 / math.sqrt(embedding_size)
    for block in range(start // BLOCK_ROWS, math.ceil(end / BLOCK_ROWS)):
        block_start = block * BLOCK_ROWS
        generator = _block_generator(seed, block)
        drawn = torch.empty(BLOCK_ROWS, columns)
        if linear_init:
            drawn.uniform_(-bound, bound, generator=generator)
        else:
            drawn.normal_(0.0, INIT_STD, generator=generator)
            if bias:
                drawn[:, embedding_size] = 0.0
        low, high = max(start, block_start), min(end, block_start + BLOCK_ROWS)
        rows[low - start : high - start] = drawn[low - block_start : high - block_start]
    return rows
