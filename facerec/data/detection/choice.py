"""Which face of a photo to keep: the largest and most central face whose score reaches a minimum.

Each face with score >= ``min_score`` gets the priority ``area x (1 - offset)``, where ``area`` is its box's
area and ``offset`` the distance of the box's centre from the photo's centre divided by half the photo's diagonal
(0 at the centre, 1 in a corner); the face of highest priority is kept. A photo is then ``one_face``,
``several_faces`` (a face kept, others above the minimum score too), ``low_score`` (faces, none reaching the
minimum score: nothing kept) or ``no_face``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

import numpy as np

from facerec.data.detection.mtcnn import Faces

DEFAULT_MIN_SCORE = 0.9
"""Default minimum O-Net probability of a kept face (the detector itself reports faces from 0.7)."""


class Outcome(StrEnum):
    """What detection made of a photo."""

    ONE_FACE = "one_face"
    SEVERAL_FACES = "several_faces"
    LOW_SCORE = "low_score"
    NO_FACE = "no_face"


class FaceChoice(NamedTuple):
    """One photo's detection outcome.

    Attributes:
        outcome: See :class:`Outcome`.
        index: The kept face's row in ``faces``, or None (``low_score``, ``no_face``).
        faces: Everything the detector found in the photo.
    """

    outcome: Outcome
    index: int | None
    faces: Faces

    @property
    def landmarks(self) -> np.ndarray | None:
        """(5, 2) landmarks of the kept face, or None."""
        return None if self.index is None else self.faces.landmarks[self.index]


def priority(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """``area x (1 - offset)`` of (K, 4) boxes ``(x1, y1, x2, y2)`` in an image of ``image_size`` (H, W): (K,)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = image_size
    area = (boxes[:, 2] - boxes[:, 0]).clip(min=0) * (boxes[:, 3] - boxes[:, 1]).clip(min=0)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    offset = np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2) / (np.hypot(width, height) / 2)
    return area * (1 - offset.clip(max=1))


def choose_face(faces: Faces, image_size: tuple[int, int], min_score: float = DEFAULT_MIN_SCORE) -> FaceChoice:
    """Applies the rule of this module to one photo's faces.

    Args:
        faces: The detector's faces in the photo.
        image_size: The photo's (H, W).
        min_score: Minimum face probability of a face that may be kept, in [0, 1].

    Raises:
        ValueError: ``min_score`` outside [0, 1].
    """
    if not 0 <= min_score <= 1:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    if not len(faces):
        return FaceChoice(Outcome.NO_FACE, None, faces)
    eligible = np.flatnonzero(faces.scores >= min_score)
    if not len(eligible):
        return FaceChoice(Outcome.LOW_SCORE, None, faces)
    best = int(eligible[np.argmax(priority(faces.boxes[eligible], image_size))])
    return FaceChoice(Outcome.ONE_FACE if len(eligible) == 1 else Outcome.SEVERAL_FACES, best, faces)
