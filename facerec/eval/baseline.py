"""Baselines a trained model must beat: raw pixels and eigenfaces (PCA of the training images).

Both take pixel rows (:func:`facerec.data.pixels.pixel_rows`: each image as the model sees it, plus its
mirror image, flattened), so they see the images exactly as the model does.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from facerec.eval.verification import evaluate


class PairProtocol(Protocol):
    """Pairs of rows to verify (a :class:`~facerec.data.verification.sets.VerificationSet` is one)."""

    pairs: np.ndarray  # (P, 2) row indices
    issame: np.ndarray  # (P,) bool
    folds: int | None  # the protocol's own fold count, if any


def raw_pixel_features(pixels: np.ndarray) -> np.ndarray:
    """The raw-pixel baseline's embeddings: each pixel row minus its mean. (N, D) → (N, D)."""
    return pixels - pixels.mean(axis=1, keepdims=True)


def pair_metrics(features: np.ndarray, protocol: PairProtocol, n_folds: int = 10) -> dict[str, float]:
    """Verification metrics of ``protocol``'s pairs of rows of ``features`` (its own fold count, else ``n_folds``)."""
    first, second = features[protocol.pairs[:, 0]], features[protocol.pairs[:, 1]]
    return evaluate(first, second, protocol.issame, protocol.folds or n_folds)


def raw_pixel_metrics(pixels: np.ndarray, protocol: PairProtocol, n_folds: int = 10) -> dict[str, float]:
    """Metrics of ``protocol`` when each image's pixel row (minus its mean) is the embedding."""
    return pair_metrics(raw_pixel_features(pixels), protocol, n_folds)


def fit_pca(samples: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of the rows of ``samples`` (N, D).

    Returns:
        ``(mean, components, scales)``: the (D,) mean, the (K, D) orthonormal components, largest variance
        first, and their (K,) standard deviations; K = min(n_components, N, D).
    """
    mean = samples.mean(axis=0)
    _, singular_values, components = np.linalg.svd(samples - mean, full_matrices=False)
    k = min(n_components, len(singular_values))
    return mean, components[:k], singular_values[:k] / np.sqrt(max(len(samples) - 1, 1))


def eigenface_features(
    pixels: np.ndarray, pca: tuple[np.ndarray, np.ndarray, np.ndarray], whiten: bool = False
) -> np.ndarray:
    """Eigenfaces (Turk & Pentland, 1991): pixel rows projected on a :func:`fit_pca` of training rows. → (N, K).

    Args:
        pixels: (N, D) rows to embed.
        pca: :func:`fit_pca` of the training images' rows (never of the rows embedded).
        whiten: Divide each projection by its component's standard deviation.
    """
    mean, components, scales = pca
    projected = (pixels - mean) @ components.T
    if whiten:
        projected /= np.where(scales > 0, scales, 1.0)
    return projected


def eigenface_metrics(
    pixels: np.ndarray,
    training_pixels: np.ndarray,
    protocol: PairProtocol,
    n_components: int = 100,
    whiten: bool = False,
    n_folds: int = 10,
) -> dict[str, float]:
    """Metrics of ``protocol`` when the embedding is a row's projection on the training rows' principal components."""
    features = eigenface_features(pixels, fit_pca(training_pixels, n_components), whiten)
    return pair_metrics(features, protocol, n_folds)
