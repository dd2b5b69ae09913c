"""Raw photos to aligned face crops: detect, choose one face (:mod:`~facerec.data.detection.choice`), align."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from facerec.data.align import TEMPLATE_SIZE, align_face
from facerec.data.detection.choice import DEFAULT_MIN_SCORE, FaceChoice, choose_face
from facerec.data.detection.mtcnn import FaceDetector


class AlignedPhoto(NamedTuple):
    """One photo's outcome and, when a face was kept, its aligned RGB uint8 crop (H, W, 3)."""

    choice: FaceChoice
    crop: np.ndarray | None


def align_photos(
    images: Sequence[np.ndarray],
    detector: FaceDetector,
    size: tuple[int, int] = (TEMPLATE_SIZE, TEMPLATE_SIZE),
    min_score: float = DEFAULT_MIN_SCORE,
    batch_size: int = 16,
) -> list[AlignedPhoto]:
    """Detects the faces of RGB uint8 (H, W, 3) photos and aligns the kept one to the ArcFace template.

    Args:
        images: The photos, any sizes.
        detector: The face detector.
        size: Crop (H, W), see :func:`facerec.data.align.template`.
        min_score: Minimum score of a kept face.
        batch_size: Photos per detector pass.

    Returns:
        One :class:`AlignedPhoto` per photo, in order; ``crop`` is None where no face was kept.

    Raises:
        ValueError: A photo that is not an RGB uint8 (H, W, 3) array, a bad ``size`` or ``min_score``.
    """
    aligned = []
    for image, faces in zip(images, detector.detect(images, batch_size), strict=True):
        choice = choose_face(faces, image.shape[:2], min_score)
        landmarks = choice.landmarks
        aligned.append(AlignedPhoto(choice, None if landmarks is None else align_face(image, landmarks, size)))
    return aligned
