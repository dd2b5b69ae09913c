"""albumentations pipelines: RGB uint8 (H, W, 3) → float tensor (3, H, W) in [-1, 1]."""

from __future__ import annotations

import albumentations as A
from albumentations.pytorch import ToTensorV2

AUGMENTATIONS = ("none", "default", "strong")


def _normalise() -> list[A.BasicTransform]:
    return [A.Normalize(mean=0.5, std=0.5, max_pixel_value=255.0), ToTensorV2()]


def train_transform(image_size: tuple[int, int], augment: str = "default") -> A.Compose:
    """The training pipeline.

    Args:
        image_size: (H, W) the network expects; other sizes are resized.
        augment: ``none`` (resize + normalise), ``default`` (+ horizontal flip, as insightface),
            or ``strong`` (+ small affine jitter, colour jitter, blur and a random erased box).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    height, width = image_size
    steps: list[A.BasicTransform] = [A.Resize(height, width)]
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


def eval_transform(image_size: tuple[int, int]) -> A.Compose:
    """The evaluation pipeline: resize (only if needed) and normalise; flip TTA is the model's job."""
    height, width = image_size
    return A.Compose([A.Resize(height, width), *_normalise()])
