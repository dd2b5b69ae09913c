"""Chunked cosine top-k search: every query's nearest keys without an N×M similarity matrix."""

from __future__ import annotations

import numpy as np
import torch


def top_k_cosine(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    skip_self: bool = False,
    query_chunk: int = 1024,
    key_chunk: int = 65536,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar keys of every query, by dot product (cosine for L2-normalised rows).

    Memory: (query_chunk, key_chunk + k) similarities at a time, never (Q, K).

    Args:
        queries: (Q, E) float.
        keys: (K, E) float.
        k: Neighbours per query; fewer keys give fewer columns.
        skip_self: ``queries`` are ``keys`` (same rows): a row is never its own neighbour.
        query_chunk: Queries per block.
        key_chunk: Keys per block.
        device: Where the products run.

    Returns:
        ``(indices, scores)``: (Q, k') int64 key indices and float32 scores, best first, ``k' = min(k, K - skip_self)``.

    Raises:
        ValueError: Widths differ, ``k`` or a chunk below 1, or ``skip_self`` with different row counts.
    """
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries {queries.shape} and keys {keys.shape} must be (N, E) of one width")
    if min(k, query_chunk, key_chunk) < 1:
        raise ValueError(f"k, query_chunk and key_chunk must be >= 1, got {k}, {query_chunk}, {key_chunk}")
    if skip_self and len(queries) != len(keys):
        raise ValueError(f"skip_self needs queries and keys of one length, got {len(queries)} and {len(keys)}")
    width = max(0, min(k, len(keys) - int(skip_self)))
    indices = np.zeros((len(queries), width), dtype=np.int64)
    scores = np.zeros((len(queries), width), dtype=np.float32)
    if width == 0:
        return indices, scores
    key_rows = torch.as_tensor(keys, dtype=torch.float32)
    for first in range(0, len(queries), query_chunk):
        block = torch.as_tensor(queries[first : first + query_chunk], dtype=torch.float32, device=device)
        rows = torch.arange(first, first + len(block), device=device)
        best_scores = torch.full((len(block), 0), -torch.inf, device=device)
        best_indices = torch.zeros((len(block), 0), dtype=torch.int64, device=device)
        for start in range(0, len(keys), key_chunk):
            similar = block @ key_rows[start : start + key_chunk].to(device).T
            columns = torch.arange(start, start + similar.shape[1], device=device).expand(len(block), -1)
            if skip_self:
                similar = similar.masked_fill(columns == rows[:, None], -torch.inf)
            block_scores, order = similar.topk(min(width, similar.shape[1]), dim=1)
            merged_scores = torch.cat([best_scores, block_scores], dim=1)
            merged_indices = torch.cat([best_indices, columns.gather(1, order)], dim=1)
            best_scores, order = merged_scores.topk(min(width, merged_scores.shape[1]), dim=1)
            best_indices = merged_indices.gather(1, order)
        indices[first : first + len(block)] = best_indices.cpu().numpy()
        scores[first : first + len(block)] = best_scores.cpu().numpy()
    return indices, scores
