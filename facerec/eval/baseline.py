"""Baselines a trained model must beat: raw pixels and eigenfaces (PCA of the training images).

Both see the images exactly as the model does (``data.crop``, resize to ``image_size``, [-1, 1]) and,
like the model's flip TTA, each image's pixels plus its mirror image's.
"""

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
    """Flattened pixels of each image plus its mirror image, as the model would see them. → (N, 3·H·W) float64."""
    loader = DataLoader(VerificationImages(images, eval_transform(image_size, crop)), batch_size=256)
    return torch.cat([(batch + batch.flip(3)).flatten(1) for batch, _ in loader]).double().numpy()


def raw_pixel_features(
    images: Sequence[Path] | Sequence[np.ndarray], image_size: tuple[int, int], crop: Crop = None
) -> np.ndarray:
    """The raw-pixel baseline's embedding of each image: :func:`pixel_rows` minus each row's mean. → (N, 3·H·W)."""
    pixels = pixel_rows(images, image_size, crop)
    return pixels - pixels.mean(axis=1, keepdims=True)


def raw_pixel_metrics(
    val_set: VerificationSet, image_size: tuple[int, int], crop: Crop = None, n_folds: int = 10
) -> dict[str, float]:
    """Metrics of ``val_set`` when each image's pixels (minus their mean) are the embedding.

    Args:
        val_set: The verification set.
        image_size: (H, W) the images are resized to, as for the model.
        crop: ``data.crop``, applied before resizing, as for the model.
        n_folds: Folds of the accuracy protocol when ``val_set`` declares none (``val_set.folds``).
    """
    pixels = raw_pixel_features(val_set.images, image_size, crop)
    return evaluate(pixels[val_set.pairs[:, 0]], pixels[val_set.pairs[:, 1]], val_set.issame, val_set.folds or n_folds)


def fit_pca(samples: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of the rows of ``samples`` (N, D).

    Returns:
        ``(mean, components, scales)``: the (D,) mean, the (K, D) orthonormal components with the
        largest variance first, and their (K,) standard deviations; K = min(n_components, N, D).
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
    """The eigenface baseline's embedding of each image: its projection on the training images' principal components.

    Turk & Pentland's eigenfaces (1991): PCA fit on ``training_images`` (never on the images embedded).

    Args:
        images: The images to embed.
        training_images: The images the PCA is fit on (unused when ``pca`` is given).
        image_size: (H, W) the images are resized to, as for the model.
        crop: ``data.crop``, applied before resizing, as for the model.
        n_components: Principal components kept.
        whiten: Divide each projection by its component's standard deviation.
        pca: A :func:`fit_pca` result of the training images' :func:`pixel_rows` at the same size and crop,
            to reuse instead of fitting again (its own number of components is kept).

    Returns:
        (N, K) float64 projections, K = the components kept (:func:`fit_pca`).
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
    """Metrics of ``val_set`` when the embedding is an image's projection on the training images' principal components.

    Turk & Pentland's eigenfaces (1991): PCA fit on ``training_images`` (never on the verification
    images), pairs compared by the cosine of their projections.

    Args:
        val_set: The verification set.
        training_images: The images the PCA is fit on.
        image_size: (H, W) the images are resized to, as for the model.
        crop: ``data.crop``, applied before resizing, as for the model.
        n_components: Principal components kept.
        whiten: Divide each projection by its component's standard deviation.
        n_folds: Folds of the accuracy protocol when ``val_set`` declares none (``val_set.folds``).
    """
    projected = eigenface_features(val_set.images, training_images, image_size, crop, n_components, whiten)
    return evaluate(
        projected[val_set.pairs[:, 0]], projected[val_set.pairs[:, 1]], val_set.issame, val_set.folds or n_folds
    )
