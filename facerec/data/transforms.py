"""albumentations pipelines: RGB uint8 (H, W, 3) → float tensor (3, H, W) in [-1, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

AUGMENTATIONS = ("none", "default", "strong")

Crop = float | Sequence[int] | None
"""``data.crop``: a centre fraction in (0, 1], a pixel box ``[top, left, height, width]``, or None."""


def check_crop(crop: Crop) -> Crop:
    """Validated ``data.crop``: float fraction, 4-tuple of ints, or None.

    Raises ValueError unless a fraction in (0, 1] or a box of four integers with positive size.
    """
    if crop is None:
        return None
    if isinstance(crop, bool):
        raise ValueError(f"data.crop={crop}: give a centre fraction in (0, 1] or a box [top, left, height, width]")
    if isinstance(crop, int | float):
        if not 0 < crop <= 1:
            raise ValueError(f"data.crop={crop}: a centre-crop fraction must be in (0, 1]")
        return float(crop)
    box = tuple(crop)
    if len(box) != 4 or not all(float(v).is_integer() for v in box):
        raise ValueError(f"data.crop={list(box)}: give a pixel box [top, left, height, width] of four integers")
    top, left, height, width = (int(v) for v in box)
    if top < 0 or left < 0 or height <= 0 or width <= 0:
        raise ValueError(f"data.crop={list(box)}: top and left must be >= 0, height and width > 0")
    return (top, left, height, width)


def crop_face(image: np.ndarray, crop: Crop, **_: Any) -> np.ndarray:
    """Cuts the face out of a loose (H, W, C) crop: fraction ``f`` keeps the central ``round(f·H) × round(f·W)``,
    a box ``(top, left, height, width)`` those pixels, None all.

    Raises:
        ValueError: The box does not fit the image.
    """
    if crop is None:
        return image
    height, width = image.shape[:2]
    if isinstance(crop, float):
        crop_height, crop_width = max(1, round(crop * height)), max(1, round(crop * width))
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
    else:
        top, left, crop_height, crop_width = crop
        if top + crop_height > height or left + crop_width > width:
            raise ValueError(
                f"data.crop box [top={top}, left={left}, height={crop_height}, width={crop_width}] does not fit "
                f"a {height}x{width} (HxW) image; choose a box inside every image, or a centre fraction (data.crop=0.8)"
            )
    return image[top : top + crop_height, left : left + crop_width]


def _crop_and_resize(image_size: tuple[int, int], crop: Crop) -> list[A.BasicTransform]:
    height, width = image_size
    steps: list[A.BasicTransform] = []
    crop = check_crop(crop)
    if crop is not None:
        steps.append(A.Lambda(image=partial(crop_face, crop=crop), name="face_crop"))
    # Area interpolation when shrinking: bilinear would alias a 112 → 64 reduction.
    return [*steps, A.Resize(height, width, interpolation=cv2.INTER_AREA)]


def _normalise() -> list[A.BasicTransform]:
    return [A.Normalize(mean=0.5, std=0.5, max_pixel_value=255.0), ToTensorV2()]


def train_transform(image_size: tuple[int, int], augment: str = "default", crop: Crop = None) -> A.Compose:
    """Training pipeline: crop (:func:`crop_face`), resize to ``image_size`` (H, W), augment, normalise.

    ``augment``: ``none``; ``default`` (+ horizontal flip, as insightface); ``strong`` (+ affine and colour jitter,
    blur, erased box). Raises ValueError for another value.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    steps = _crop_and_resize(image_size, crop)
    if augment in ("default", "strong"):
        steps.append(A.HorizontalFlip(p=0.5))
    if augment == "strong":
        steps += [
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.5),
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
            A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.3), hole_width_range=(0.1, 0.3), p=0.3),
        ]
    return A.Compose(steps + _normalise())


def eval_transform(image_size: tuple[int, int], crop: Crop = None) -> A.Compose:
    """Evaluation pipeline: crop, resize, normalise (flip TTA is the model's job)."""
    return A.Compose(_crop_and_resize(image_size, crop) + _normalise())
