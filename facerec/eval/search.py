"""Face identification (1:N) metrics: closed-set CMC and open-set DIR at fixed FPIR (NIST FRVT / IJB-C 1:N).

A probe is *mated* if its identity is enrolled (one template per identity), *non-mated* otherwise."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from facerec.eval.verification import l2_normalize

RANKS = (1, 5)
FPIR_TARGETS = (1e-2, 1e-1)
DISTRACTOR_LABEL = -1  # ``SearchResult.topk_labels`` of distractor entries (``topk_distractor`` is authoritative)


def identity_templates(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One template per identity: L2-normalised mean of its L2-normalised embeddings (N, E), float64.

    Returns:
        ``(templates, identities)``: (G, E) and the (G,) sorted unique ``labels``.

    Raises:
        ValueError: Empty input, non-integer labels or mismatched shapes.
    """
    embeddings = np.asarray(embeddings)
    labels = _integer_labels(labels, "labels")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, E), got shape {embeddings.shape}")
    if len(embeddings) == 0:
        raise ValueError("no embeddings: cannot build identity templates")
    if len(labels) != len(embeddings):
        raise ValueError(f"mismatched inputs: {len(embeddings)} embeddings, {len(labels)} labels")
    identities, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
    sums = np.add.reduceat(l2_normalize(embeddings)[order], starts, axis=0)
    counts = np.diff(np.r_[starts, len(labels)])[:, None]
    return l2_normalize(sums / counts), identities


class SearchResult(NamedTuple):
    """:func:`search` result for P probes; scores in the compute dtype.

    Entry ``n_gallery + j`` is distractor j. Top-k columns by descending score (tie order unspecified),
    ``K = min(k, n_gallery + n_distractors)``.
    """

    topk_scores: np.ndarray  # (P, K) the K highest cosine similarities of each probe
    topk_indices: np.ndarray  # (P, K) int64 entry index of each
    topk_labels: np.ndarray  # (P, K) int64 gallery identity of each; DISTRACTOR_LABEL for distractors
    topk_distractor: np.ndarray  # (P, K) bool, whether the entry is a distractor
    probe_labels: np.ndarray  # (P,) int64
    mated: np.ndarray  # (P,) bool, whether the probe's identity is enrolled
    mated_scores: np.ndarray  # (P,) score of the probe's enrolled template; NaN for non-mated probes
    ranks: np.ndarray  # (P,) int64 1 + #(other entries scoring >= the template); 0 for non-mated probes
    n_gallery: int  # G, enrolled identities
    n_distractors: int  # D

    @property
    def n_mated(self) -> int:
        """Number of mated probes."""
        return int(self.mated.sum())

    @property
    def n_non_mated(self) -> int:
        """Number of non-mated probes."""
        return int(len(self.mated) - self.mated.sum())


def search(
    probes: torch.Tensor | np.ndarray,
    gallery: torch.Tensor | np.ndarray,
    gallery_labels: Sequence[int] | np.ndarray | torch.Tensor,
    probe_labels: Sequence[int] | np.ndarray | torch.Tensor,
    distractors: torch.Tensor | np.ndarray | None = None,
    k: int = 5,
    probe_chunk: int = 4096,
    gallery_chunk: int = 32768,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SearchResult:
    """Cosine search of every probe against gallery and distractors, in chunks.

    Per probe: top-k entries, the enrolled template's score, and its pessimistic rank ``1 + #(other entries,
    distractors included, scoring >= it)`` (a tie with a wrong entry is a rank-1 miss). Gallery chunks are the
    outer loop, so each row is moved and normalised once and no score block exceeds
    ``probe_chunk × gallery_chunk`` (a 1M gallery can stay in host memory).

    Args:
        probes: (P, E) probe embeddings; moved whole to ``device``.
        gallery: (G, E) one template per enrolled identity (see :func:`identity_templates`), G >= 1.
        gallery_labels: (G,) unique integer identities of the templates.
        probe_labels: (P,) integer identity of each probe (enrolled or not).
        distractors: (D, E) entries of no identity (MegaFace-style, always wrong answers), or None.
        k: Top-k width kept per probe (capped at G + D).
        probe_chunk: Probes per product.
        gallery_chunk: Gallery (or distractor) rows moved, normalised and multiplied at once.
        device: Where the products run; defaults to the gallery's device.
        dtype: Compute dtype; defaults to float64 if any embedding input is float64, else float32.

    Returns:
        A :class:`SearchResult` of NumPy arrays.

    Raises:
        ValueError: Mismatched shapes or widths, empty gallery, duplicated gallery identity, non-integer
            labels, non-finite embeddings, or ``k``/chunk sizes below 1.
    """
    probes, gallery = torch.as_tensor(probes), torch.as_tensor(gallery)
    distractors = torch.as_tensor(distractors) if distractors is not None else gallery.new_zeros((0, gallery.shape[-1]))
    gallery_labels = _integer_labels(gallery_labels, "gallery_labels")
    probe_labels = _integer_labels(probe_labels, "probe_labels")
    _validate(probes, gallery, distractors, gallery_labels, probe_labels, k, probe_chunk, gallery_chunk)
    device = torch.device(device) if device is not None else gallery.device
    if dtype is None:
        dtype = torch.float64 if torch.float64 in (probes.dtype, gallery.dtype, distractors.dtype) else torch.float32
    n_gallery, n_distractors, n_probes = len(gallery), len(distractors), len(probes)
    width = min(k, n_gallery + n_distractors)

    # Row of each probe's enrolled template in the gallery, -1 if not enrolled.
    order = np.argsort(gallery_labels, kind="stable")
    position = np.minimum(np.searchsorted(gallery_labels[order], probe_labels), n_gallery - 1)
    mated = gallery_labels[order][position] == probe_labels
    mated_rows = np.where(mated, order[position], -1)

    probe_rows = F.normalize(probes.to(device, dtype), dim=1)
    mated_on_device = torch.as_tensor(mated, device=device)
    mated_rows_on_device = torch.as_tensor(mated_rows, device=device)
    templates = F.normalize(gallery[torch.as_tensor(np.maximum(mated_rows, 0))].to(device, dtype), dim=1)
    nan = torch.tensor(float("nan"), device=device, dtype=dtype)
    mated_scores = torch.where(mated_on_device, (probe_rows * templates).sum(dim=1), nan)

    best_scores = torch.full((n_probes, width), -math.inf, device=device, dtype=dtype)
    best_indices = torch.full((n_probes, width), -1, device=device, dtype=torch.long)
    at_least = torch.zeros(n_probes, device=device, dtype=torch.long)
    for start, rows in _chunks(gallery, distractors, gallery_chunk):
        entries = rows.to(device, dtype)
        if not torch.isfinite(entries).all():
            raise ValueError(f"non-finite gallery or distractor embedding among entries {start}..{start + len(rows)}")
        entries = F.normalize(entries, dim=1)
        for first in range(0, n_probes, probe_chunk):
            batch = slice(first, first + probe_chunk)
            scores = probe_rows[batch] @ entries.T
            top_scores, top_columns = scores.topk(min(width, len(rows)), dim=1)
            merged_scores = torch.cat([best_scores[batch], top_scores], dim=1)
            merged_indices = torch.cat([best_indices[batch], top_columns + start], dim=1)
            best_scores[batch], keep = merged_scores.topk(width, dim=1)
            best_indices[batch] = merged_indices.gather(1, keep)
            own = mated_rows_on_device[batch] - start
            inside = torch.nonzero((own >= 0) & (own < len(rows))).squeeze(1)
            scores[inside, own[inside]] = -math.inf  # the template does not count against its own rank
            at_least[batch] += (scores >= mated_scores[batch, None]).sum(dim=1)

    topk_indices = best_indices.cpu().numpy()
    entry_labels = np.r_[gallery_labels, np.full(n_distractors, DISTRACTOR_LABEL, dtype=np.int64)]
    return SearchResult(
        topk_scores=best_scores.cpu().numpy(),
        topk_indices=topk_indices,
        topk_labels=entry_labels[topk_indices],
        topk_distractor=topk_indices >= n_gallery,
        probe_labels=probe_labels,
        mated=mated,
        mated_scores=mated_scores.cpu().numpy(),
        ranks=np.where(mated, at_least.cpu().numpy() + 1, 0),
        n_gallery=n_gallery,
        n_distractors=n_distractors,
    )


def search_identities(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    probes: torch.Tensor | np.ndarray,
    probe_labels: Sequence[int] | np.ndarray,
    distractors: torch.Tensor | np.ndarray | None = None,
    **options,
) -> SearchResult:
    """:func:`search` of probes (P, E) against :func:`identity_templates` of ``gallery`` (N, E).

    Empty ``distractors`` count as None; ``options`` go to :func:`search`.
    """
    templates, identities = identity_templates(gallery, gallery_labels)
    if distractors is not None and len(distractors) == 0:
        distractors = None
    return search(probes, templates, identities, probe_labels, distractors=distractors, **options)


def cmc_curve(result: SearchResult, max_rank: int | None = None) -> np.ndarray:
    """CMC (max_rank,) float64: entry ``r - 1`` is the share of mated probes with rank ≤ r; NaN if none.

    ``max_rank`` defaults to G + D; ValueError if below 1.
    """
    max_rank = result.n_gallery + result.n_distractors if max_rank is None else max_rank
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    ranks = result.ranks[result.mated]
    if len(ranks) == 0:
        return np.full(max_rank, np.nan)
    hits = np.bincount(np.minimum(ranks, max_rank + 1), minlength=max_rank + 2)[1 : max_rank + 1]
    return np.cumsum(hits) / len(ranks)


class OpenSetPoint(NamedTuple):
    """An open-set operating point: a top-1 score is accepted iff ``score > threshold``."""

    threshold: float  # tau, the (m+1)-th highest non-mated top-1 score (-inf if all may pass)
    dir: float  # detection and identification rate, 1 - FNIR
    fpir: float  # achieved false positive identification rate (<= the target)


def dir_at_fpir(result: SearchResult, target: float) -> OpenSetPoint:
    """DIR at the smallest threshold with FPIR ≤ ``target``: accept iff ``score > tau``, ``tau = s_{m+1}``.

    ``s_1 ≥ … ≥ s_n`` are the non-mated top-1 scores, ``m = floor(target·n)`` (``tau = -inf`` if m ≥ n); ties
    at tau are rejected, so FPIR never exceeds ``target``. DIR: share of mated probes at rank 1 with score
    > tau. All NaN without non-mated probes; ``dir`` NaN without mated ones. ValueError if ``target`` ∉ [0, 1].
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"FPIR target must lie in [0, 1], got {target}")
    non_mated_top1 = np.sort(result.topk_scores[~result.mated, 0].astype(np.float64))[::-1]
    n = len(non_mated_top1)
    if n == 0:
        return OpenSetPoint(math.nan, math.nan, math.nan)
    allowed = math.floor(target * n + 1e-9)  # the tolerance keeps e.g. 0.29 * 100 = 28.999… at 29
    tau = float(non_mated_top1[allowed]) if allowed < n else -math.inf
    fpir = float(np.mean(non_mated_top1 > tau))
    if not result.mated.any():
        return OpenSetPoint(tau, math.nan, fpir)
    detected = (result.ranks[result.mated] == 1) & (result.mated_scores[result.mated] > tau)
    return OpenSetPoint(tau, float(np.mean(detected)), fpir)


def fpir_key(target: float) -> str:
    """Metric name of DIR at an FPIR target: ``1e-2`` → ``dir@fpir=1e-2``."""
    return f"dir@fpir={np.format_float_scientific(target, trim='-', exp_digits=1)}"


def identification_metrics(
    result: SearchResult, ranks: Iterable[int] = RANKS, fpir_targets: Iterable[float] = FPIR_TARGETS
) -> dict[str, float]:
    """``rank-{r}`` (CMC) per rank and ``dir@fpir=…`` per target; NaN without mated (or non-mated, for DIR) probes."""
    ranks = list(ranks)
    if any(rank < 1 for rank in ranks):
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    curve = cmc_curve(result, max(ranks, default=1))
    metrics = {f"rank-{rank}": float(curve[rank - 1]) for rank in ranks}
    return metrics | {fpir_key(target): dir_at_fpir(result, target).dir for target in fpir_targets}


def _integer_labels(labels: Sequence[int] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Labels as a 1-D int64 array; ValueError if they are not integers."""
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _validate(
    probes: torch.Tensor,
    gallery: torch.Tensor,
    distractors: torch.Tensor,
    gallery_labels: np.ndarray,
    probe_labels: np.ndarray,
    k: int,
    probe_chunk: int,
    gallery_chunk: int,
) -> None:
    """Raises :func:`search`'s ValueErrors, except the per-chunk finiteness check."""
    for name, tensor in (("probes", probes), ("gallery", gallery), ("distractors", distractors)):
        if tensor.ndim != 2:
            raise ValueError(f"{name} must be (N, E), got shape {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    if len(gallery) == 0:
        raise ValueError("empty gallery: at least one enrolled identity is needed")
    widths = {"probes": probes.shape[1], "gallery": gallery.shape[1], "distractors": distractors.shape[1]}
    if len(set(widths.values())) > 1:
        raise ValueError(f"embedding widths differ: {widths}")
    if len(gallery_labels) != len(gallery):
        raise ValueError(f"mismatched gallery: {len(gallery)} templates, {len(gallery_labels)} labels")
    if len(probe_labels) != len(probes):
        raise ValueError(f"mismatched probes: {len(probes)} embeddings, {len(probe_labels)} labels")
    identities, counts = np.unique(gallery_labels, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicated gallery identities (one template each): {identities[counts > 1][:10].tolist()}")
    if not torch.isfinite(probes).all():
        raise ValueError("non-finite probe embedding")
    for name, value in (("k", k), ("probe_chunk", probe_chunk), ("gallery_chunk", gallery_chunk)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _chunks(gallery: torch.Tensor, distractors: torch.Tensor, size: int) -> Iterable[tuple[int, torch.Tensor]]:
    """Yields ``(first entry index, rows)`` over gallery then distractor chunks of ≤ ``size`` rows."""
    for offset, rows in ((0, gallery), (len(gallery), distractors)):
        for start in range(0, len(rows), size):
            yield offset + start, rows[start : start + size]
