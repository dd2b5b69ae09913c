"""``data.min_images_per_identity`` / ``max_images_per_identity``: drop identities with too few images,
cap the others, relabel the rest ``0 .. C'-1``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def select_images(
    labels: Sequence[int] | np.ndarray,
    min_images: int = 1,
    max_images: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples of identities with >= ``min_images`` images, at most ``max_images`` each.

    Args:
        labels: (N,) class per sample.
        min_images: Fewer: identity dropped.
        max_images: More: a random subset from (``seed``, label), stable across runs; None keeps all.
        seed: Seed of that draw.

    Returns:
        ``(samples, kept_labels)``: sorted chosen indices, sorted remaining labels (new ``i`` = ``kept_labels[i]``).

    Raises:
        ValueError: ``min_images < 1`` or ``max_images`` < 1 or < ``min_images``.
    """
    if min_images < 1:
        raise ValueError(f"data.min_images_per_identity must be >= 1, got {min_images}")
    if max_images is not None and (max_images < 1 or max_images < min_images):
        raise ValueError(
            f"data.max_images_per_identity must be >= 1 and >= data.min_images_per_identity ({min_images}), "
            f"got {max_images}"
        )
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels, kind="stable")  # each identity's samples, in index order: O(N log N), not O(N·C)
    identities, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    chosen: list[np.ndarray] = []
    kept_labels: list[int] = []
    for label, start, count in zip(identities, starts, counts, strict=True):
        if count < min_images:
            continue
        samples = order[start : start + count]
        if max_images is not None and len(samples) > max_images:
            rng = np.random.default_rng([seed, int(label)])
            samples = np.sort(rng.choice(samples, size=max_images, replace=False))
        chosen.append(samples)
        kept_labels.append(int(label))
    samples = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return samples, np.asarray(kept_labels, dtype=np.int64)


class IdentitySubset:
    """A training set restricted to ``samples``, identities relabelled ``0 .. C'-1`` (``kept_labels[i]`` -> ``i``).

    ``transform`` is the wrapped set's, so epoch reseeding reaches it.
    """

    def __init__(self, dataset: Any, samples: np.ndarray, kept_labels: np.ndarray) -> None:
        self.dataset = dataset
        self.samples = np.asarray(samples, dtype=np.int64)
        new_label = {int(old): new for new, old in enumerate(kept_labels)}
        original = np.asarray(dataset.labels, dtype=np.int64)[self.samples]
        self.labels = np.asarray([new_label[int(old)] for old in original], dtype=np.int64)
        self.class_names = [dataset.class_names[int(old)] for old in kept_labels]

    @property
    def transform(self) -> Any:
        """The wrapped set's transform."""
        return self.dataset.transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, _ = self.dataset[int(self.samples[i])]
        return image, int(self.labels[i])


def restrict_identities(dataset: Any, min_images: int = 1, max_images: int | None = None, seed: int = 0) -> Any:
    """``dataset`` if nothing is dropped or capped, else a logged :class:`IdentitySubset`.

    Raises:
        ValueError: No identity has ``min_images`` images.
    """
    samples, kept_labels = select_images(dataset.labels, min_images, max_images, seed)
    if len(samples) == len(dataset.labels):
        return dataset
    if not len(kept_labels):
        largest = int(np.bincount(np.asarray(dataset.labels, dtype=np.int64)).max())
        raise ValueError(
            f"no identity has data.min_images_per_identity={min_images} images "
            f"(the largest has {largest}); lower data.min_images_per_identity"
        )
    cap = f", at most {max_images} per identity" if max_images is not None else ""
    log.info(
        "kept %d of %d identities (>= %d images each) and %d of %d images%s",
        len(kept_labels),
        len(dataset.class_names),
        min_images,
        len(samples),
        len(dataset.labels),
        cap,
    )
    return IdentitySubset(dataset, samples, kept_labels)
