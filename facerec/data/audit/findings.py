"""What the audit finds in a labelled set of L2-normalised embeddings: duplicates, label errors, identity merges and
overlap with another set's people. Pure functions of arrays; every search is chunked (:func:`top_k_cosine`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from facerec.data.audit.neighbours import top_k_cosine

NEIGHBOURS = 10
"""Nearest images searched per image for near-duplicates (more copies of one photo still link up as a chain)."""


class Centres(NamedTuple):
    """Identity centres of labelled embeddings.

    Attributes:
        sums: (C, E) float32 sum of each identity's embeddings.
        counts: (C,) int64 images per identity.
    """

    sums: np.ndarray
    counts: np.ndarray

    @property
    def present(self) -> np.ndarray:
        """(C',) int64 identities with at least one image."""
        return np.flatnonzero(self.counts > 0)

    @property
    def unit(self) -> np.ndarray:
        """(C, E) float32 L2-normalised centres (zero rows for identities without images)."""
        norms = np.linalg.norm(self.sums, axis=1, keepdims=True)
        return np.divide(self.sums, norms, out=np.zeros_like(self.sums), where=norms > 0)


class NearDuplicate(NamedTuple):
    """Images ``first`` < ``second`` whose embeddings have cosine ``cosine``."""

    first: int
    second: int
    cosine: float


class LabelError(NamedTuple):
    """Image ``index``: cosine ``own`` to its identity's centre without it, ``other`` to identity ``other_label``'s."""

    index: int
    own: float
    other_label: int
    other: float


class Merge(NamedTuple):
    """Identities ``first`` < ``second`` whose centres have cosine ``cosine``."""

    first: int
    second: int
    cosine: float


class Overlap(NamedTuple):
    """Identity ``label`` of the audited set and person ``person`` of the other set: centre cosine ``cosine``."""

    label: int
    person: int
    cosine: float


def exact_duplicates(digests: Sequence[str]) -> list[list[int]]:
    """Groups of two or more indices with one digest (of the decoded pixels), each sorted, by first index."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(digests):
        groups[digest].append(index)
    return sorted(group for group in groups.values() if len(group) > 1)


def near_duplicates(
    embeddings: np.ndarray,
    threshold: float,
    exact: Sequence[Sequence[int]] = (),
    neighbours: int = NEIGHBOURS,
    device: str | torch.device = "cpu",
) -> list[NearDuplicate]:
    """Pairs of images with embedding cosine at least ``threshold``, most similar first.

    Each image's ``neighbours`` nearest images are searched, so a photo with more copies still links to some.

    Args:
        embeddings: (N, E) L2-normalised.
        threshold: Smallest cosine of a near-duplicate.
        exact: Groups already found identical (:func:`exact_duplicates`): pairs within one are left out.
        neighbours: Nearest images searched per image.
        device: Where the search runs.
    """
    group_of = {index: number for number, group in enumerate(exact) for index in group}
    indices, scores = top_k_cosine(embeddings, embeddings, neighbours, skip_self=True, device=device)
    found = {}
    for row, column in zip(*np.nonzero(scores >= threshold), strict=True):
        first, second = sorted((int(row), int(indices[row, column])))
        same_group = first in group_of and group_of[first] == group_of.get(second)
        if not same_group:
            found[first, second] = float(scores[row, column])
    pairs = [NearDuplicate(first, second, cosine) for (first, second), cosine in found.items()]
    return sorted(pairs, key=lambda pair: (-pair.cosine, pair.first, pair.second))


def identity_centres(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> Centres:
    """Per-identity sums and counts of (N, E) embeddings with (N,) int labels in ``[0, num_classes)``."""
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=torch.float64)
    sums.index_add_(0, torch.as_tensor(labels, dtype=torch.int64), torch.as_tensor(embeddings, dtype=torch.float64))
    return Centres(sums.float().numpy(), np.bincount(labels, minlength=num_classes).astype(np.int64))


def label_errors(
    embeddings: np.ndarray, labels: np.ndarray, centres: Centres, margin: float, device: str | torch.device = "cpu"
) -> list[LabelError]:
    """Images closer to another identity's centre than to their own by at least ``margin`` (cosine), worst first.

    An image's own centre leaves it out (the mean of its identity's other images), so identities of one image are
    never judged; the other centres are whole.

    Args:
        embeddings: (N, E) L2-normalised.
        labels: (N,) int identity of each image.
        centres: :func:`identity_centres` of these embeddings.
        margin: Smallest ``other - own`` of a reported image.
        device: Where the search runs.
    """
    if len(centres.present) < 2:
        return []
    others = centres.sums[labels] - embeddings
    norms = np.linalg.norm(others, axis=1)
    alone = (centres.counts[labels] < 2) | (norms <= 1e-6)
    own = np.einsum("ne,ne->n", embeddings, others) / np.where(alone, 1.0, norms)
    present = centres.present
    indices, scores = top_k_cosine(embeddings, centres.unit[present], 2, device=device)
    indices = present[indices]
    first_is_own = indices[:, 0] == labels
    other_label = np.where(first_is_own, indices[:, 1], indices[:, 0])
    other = np.where(first_is_own, scores[:, 1], scores[:, 0])
    flagged = np.flatnonzero(~alone & (other - own >= margin))
    errors = [LabelError(int(i), float(own[i]), int(other_label[i]), float(other[i])) for i in flagged]
    return sorted(errors, key=lambda error: (error.own - error.other, error.index))


def identity_merges(
    centres: Centres, threshold: float, neighbours: int = NEIGHBOURS, device: str | torch.device = "cpu"
) -> list[Merge]:
    """Pairs of identities whose centres have cosine at least ``threshold`` (probably one person), most similar
    first; each identity's ``neighbours`` nearest identities are searched (identities without images are not).
    """
    present = centres.present
    unit = centres.unit[present]
    indices, scores = top_k_cosine(unit, unit, neighbours, skip_self=True, device=device)
    indices = present[indices]
    found = {}
    for row, column in zip(*np.nonzero(scores >= threshold), strict=True):
        first, second = sorted((int(present[row]), int(indices[row, column])))
        found[first, second] = float(scores[row, column])
    merges = [Merge(first, second, cosine) for (first, second), cosine in found.items()]
    return sorted(merges, key=lambda merge: (-merge.cosine, merge.first, merge.second))


def overlap(
    centres: Centres,
    people: Centres,
    threshold: float,
    neighbours: int = NEIGHBOURS,
    device: str | torch.device = "cpu",
) -> list[Overlap]:
    """Identities of the audited set whose centre has cosine at least ``threshold`` with a person's centre of another
    set (e.g. a verification set's people), most similar first; each person's ``neighbours`` nearest identities
    are searched.
    """
    present, persons = centres.present, people.present
    indices, scores = top_k_cosine(people.unit[persons], centres.unit[present], neighbours, device=device)
    found = [
        Overlap(int(present[indices[row, column]]), int(persons[row]), float(scores[row, column]))
        for row, column in zip(*np.nonzero(scores >= threshold), strict=True)
    ]
    return sorted(found, key=lambda item: (-item.cosine, item.label, item.person))
