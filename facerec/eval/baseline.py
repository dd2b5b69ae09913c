"""Raw-pixel and eigenface (PCA) baselines a trained model must beat.

Both use the model's preprocessing (``data.crop``, resize, [-1, 1]) and flip TTA (pixels + mirror)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from facerec.data.transforms import Crop, eval_transform
from facerec.data.verification import VerificationImages, VerificationSet
from facerec.eval.verification import evaluate


def pixel_rows(
    images: Sequence[Path] | Sequence[np.ndarray], image_size: tuple[int, int], crop: Crop = None
) -> np.ndarray:
    """Flattened preprocessed pixels plus their mirror image, (N, 3·H·W) float64."""
    loader = DataLoader(VerificationImages(images, eval_transform(image_size, crop)), batch_size=256)
    return torch.cat([(batch + batch.flip(3)).flatten(1) for batch, _ in loader]).double().numpy()


def raw_pixel_features(
    images: Sequence[Path] | Sequence[np.ndarray], image_size: tuple[int, int], crop: Crop = None
) -> np.ndarray:
    """Raw-pixel embeddings (N, 3·H·W): :func:`pixel_rows` minus each row's mean."""
    pixels = pixel_rows(images, image_size, crop)
    return pixels - pixels.mean(axis=1, keepdims=True)


def raw_pixel_metrics(
    val_set: VerificationSet, image_size: tuple[int, int], crop: Crop = None, n_folds: int = 10
) -> dict[str, float]:
    """Metrics of ``val_set`` on :func:`raw_pixel_features`; ``n_folds`` if ``val_set.folds`` is None."""
    pixels = raw_pixel_features(val_set.images, image_size, crop)
    return evaluate(pixels[val_set.pairs[:, 0]], pixels[val_set.pairs[:, 1]], val_set.issame, val_set.folds or n_folds)


def fit_pca(samples: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of ``samples`` (N, D): mean (D,), components (K, D) by decreasing variance, std devs (K,).

    K = min(n_components, N, D).
    """
    mean = samples.mean(axis=0)
    _, singular_values, components = np.linalg.svd(samples - mean, full_matrices=False)
    k = min(n_components, len(singular_values))
    return mean, components[:k], singular_values[:k] / np.sqrt(max(len(samples) - 1, 1))


def eigenface_features(
    images: Sequence[Path] | Sequence[np.ndarray],
    training_images: Sequence[Path] | Sequence[np.ndarray],
    image_size: tuple[int, int],
    crop: Crop = None,
    n_components: int = 100,
    whiten: bool = False,
    pca: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Eigenfaces (Turk & Pentland, 1991): (N, K) float64 projections on ``training_images``' PCA.

    ``whiten`` divides by each component's std dev; ``pca``: a :func:`fit_pca` result (same size and crop)
    to reuse instead of fitting ``n_components`` on ``training_images``.
    """
    if pca is None:
        pca = fit_pca(pixel_rows(training_images, image_size, crop), n_components)
    mean, components, scales = pca
    projected = (pixel_rows(images, image_size, crop) - mean) @ components.T
    if whiten:
        projected /= np.where(scales > 0, scales, 1.0)
    return projected


def eigenface_metrics(
    val_set: VerificationSet,
    training_images: Sequence[Path],
    image_size: tuple[int, int],
    crop: Crop = None,
    n_components: int = 100,
    whiten: bool = False,
    n_folds: int = 10,
) -> dict[str, float]:
    """Verification metrics of ``val_set`` with :func:`eigenface_features` as embeddings (cosine compared).

    ``n_folds`` applies when ``val_set.folds`` is None; other arguments as :func:`eigenface_features`.
    """
    projected = eigenface_features(val_set.images, training_images, image_size, crop, n_components, whiten)
    return evaluate(
        projected[val_set.pairs[:, 0]], projected[val_set.pairs[:, 1]], val_set.issame, val_set.folds or n_folds
    )
