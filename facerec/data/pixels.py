"""Images as flat pixel rows: the input of the raw-pixel and eigenface baselines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from facerec.data.transforms import Crop, eval_transform
from facerec.data.verification.sets import VerificationImages


def pixel_rows(
    images: Sequence[Path] | Sequence[np.ndarray], image_size: tuple[int, int], crop: Crop = None
) -> np.ndarray:
    """(N, 3·H·W) float64: each image after ``crop``, resize and [-1, 1], summed with its mirror image."""
    loader = DataLoader(VerificationImages(images, eval_transform(image_size, crop)), batch_size=256)
    return torch.cat([(batch + batch.flip(3)).flatten(1) for batch, _ in loader]).double().numpy()
