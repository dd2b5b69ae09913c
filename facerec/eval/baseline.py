"""Raw-pixel baseline: verification with the normalised pixels as the embedding."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from facerec.data.transforms import eval_transform
from facerec.data.verification import VerificationImages, VerificationSet
from facerec.eval.verification import evaluate


def raw_pixel_metrics(val_set: VerificationSet, image_size: tuple[int, int], n_folds: int = 10) -> dict[str, float]:
    """Metrics of ``val_set`` when each image's flattened pixels (plus its mirror image's, as the
    model's flip TTA) are the embedding. A trained model must beat this by a wide margin."""
    loader = DataLoader(VerificationImages(val_set, eval_transform(image_size)), batch_size=256)
    rows = [(images + images.flip(3)).flatten(1) for images, _ in loader]
    pixels = torch.cat(rows).double().numpy()
    pixels -= pixels.mean(axis=1, keepdims=True)
    return evaluate(pixels[val_set.pairs[:, 0]], pixels[val_set.pairs[:, 1]], val_set.issame, n_folds)
