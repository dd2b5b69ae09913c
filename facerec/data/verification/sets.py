"""Verification sets (unique images + pairs) from a ``pairs.txt`` with an image folder, or an insightface ``.bin``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from facerec.data.decode import read_image
from facerec.data.detection.mtcnn import FaceDetector
from facerec.data.detection.photos import align_photos
from facerec.data.verification.bin import load_verification_bin
from facerec.data.verification.pairs import read_pairs

log = logging.getLogger(__name__)

PAIRS_OPTIONS = frozenset({"pairs", "images", "drop_missing", "detect"})
DETECT_CHUNK = 64
"""Photos decoded and detected at a time by ``detect=true``."""
BIN_OPTIONS = frozenset({"bin"})


@dataclass
class VerificationSet:
    """A pair protocol over unique images.

    Attributes:
        name: Used in metric keys (``val/<name>/accuracy``).
        images: Paths, or decoded RGB uint8 (H, W, 3) arrays, each once.
        pairs: (P, 2) int64 indices into ``images``, file order.
        issame: (P,) bool.
        folds: A ``folds n`` header's count (>= 2), used instead of ``callbacks.verification.n_folds``; else None.
    """

    name: str
    images: list[Path] | list[np.ndarray]
    pairs: np.ndarray
    issame: np.ndarray
    folds: int | None = None

    def __len__(self) -> int:
        return len(self.issame)


def load_pairs_set(
    name: str, pairs: str | Path, images: str | Path, drop_missing: bool = False, detect: bool = False
) -> VerificationSet:
    """Reads a ``pairs.txt`` protocol with images under ``images``; keeps a ``folds n`` header's fold count.

    Args:
        name: Set name.
        pairs: The ``pairs.txt``.
        images: Root of the relative image paths.
        drop_missing: Drop pairs with a missing image (warned; folds then differ from the published ones).
        detect: The images are raw photos: detect and align each one now (:func:`detect_and_align`).

    Raises:
        FileNotFoundError: Missing pairs file, or (unless ``drop_missing``) images; names the first ones.
        ValueError: Malformed pairs file (:func:`~facerec.data.verification.pairs.read_pairs`), no pair left, or
            ``detect`` not a boolean.
    """
    if not isinstance(detect, bool):
        raise ValueError(f"data.val_sets.{name}.detect must be true or false, got {detect!r}")
    protocol = read_pairs(pairs)
    root = Path(images)
    unique = dict.fromkeys(protocol.left + protocol.right)
    missing = [path for path in unique if not (root / path).is_file()]
    if missing and not drop_missing:
        shown = ", ".join(str(root / path) for path in missing[:3])
        raise FileNotFoundError(
            f"verification set {name!r}: {len(missing)} of {len(unique)} images named in {pairs} are missing "
            f"(e.g. {shown}); check data.val_sets.{name}.images, or set data.val_sets.{name}.drop_missing=true "
            "to drop their pairs"
        )
    absent = set(missing)
    kept = [
        (left, right, same)
        for left, right, same in zip(protocol.left, protocol.right, protocol.issame, strict=True)
        if left not in absent and right not in absent
    ]
    if missing:
        if not kept:
            raise ValueError(f"verification set {name!r}: every pair of {pairs} has a missing image under {root}")
        log.warning(
            "verification set %r: dropped %d of %d pairs whose images are missing under %s "
            "(drop_missing=true: folds are no longer comparable with published results)",
            name,
            len(protocol) - len(kept),
            len(protocol),
            root,
        )
    used = [left for left, _, _ in kept] + [right for _, right, _ in kept]
    paths = {path: index for index, path in enumerate(dict.fromkeys(used))}
    index = np.array([[paths[left], paths[right]] for left, right, _ in kept], dtype=np.int64)
    issame = np.array([same for _, _, same in kept], dtype=bool)
    folds = protocol.folds if protocol.folds is not None and protocol.folds > 1 else None
    files = [root / path for path in paths]
    return VerificationSet(name, detect_and_align(name, files) if detect else files, index, issame, folds)


def detect_and_align(name: str, files: list[Path]) -> list[np.ndarray]:
    """The ArcFace-aligned 112x112 face of each photo (``data.val_sets.<name>.detect=true``), as deployed.

    Each photo's face is found and chosen as ``python -m facerec.data align --detect`` does (MTCNN, the largest x
    most central face scoring at least 0.9), on the GPU when there is one. A photo without such a face is kept
    whole (the model's transform then resizes it, as without ``detect``), so every pair keeps its place in the
    folds; their number and first names are logged as a warning.

    Raises:
        FileNotFoundError, CorruptImageError: A photo cannot be read.
    """
    detector = FaceDetector().to("cuda" if torch.cuda.is_available() else "cpu")
    faces, missed = [], []
    for first in range(0, len(files), DETECT_CHUNK):
        photos = [read_image(file) for file in files[first : first + DETECT_CHUNK]]
        for offset, (photo, aligned) in enumerate(zip(photos, align_photos(photos, detector), strict=True)):
            faces.append(photo if aligned.crop is None else aligned.crop)
            if aligned.crop is None:
                missed.append(files[first + offset])
    log.info("verification set %r: detected and aligned %d of %d photos", name, len(files) - len(missed), len(files))
    if missed:
        log.warning(
            "verification set %r: no face scoring at least the minimum in %d of %d photos (e.g. %s); they are "
            "embedded whole",
            name,
            len(missed),
            len(files),
            ", ".join(str(file) for file in missed[:3]),
        )
    return faces


def load_bin_set(name: str, path: str | Path, expected_size: tuple[int, int] | None = None) -> VerificationSet:
    """Reads an insightface ``.bin``, decoding its images; raises as ``load_verification_bin``."""
    content = load_verification_bin(path, expected_size)
    pairs = np.arange(2 * len(content), dtype=np.int64).reshape(-1, 2)
    return VerificationSet(name, content.images, pairs, np.asarray(content.issame, dtype=bool))


def load_verification_set(
    name: str, options: Mapping[str, Any], expected_size: tuple[int, int] | None = None
) -> VerificationSet:
    """Loads ``data.val_sets.<name>``: ``{pairs, images[, drop_missing][, detect]}`` or ``{bin}``.

    ``expected_size`` (``data.strict_size``) checks ``.bin`` images here, folder images when read.
    Raises ValueError for other keys.
    """
    keys = set(options)
    if keys == BIN_OPTIONS:
        return load_bin_set(name, options["bin"], expected_size)
    if {"pairs", "images"} <= keys <= PAIRS_OPTIONS:
        return load_pairs_set(name, **options)
    raise ValueError(
        f"data.val_sets.{name} has keys {sorted(keys)}: give either 'pairs' and 'images' (optionally "
        "'drop_missing', 'detect') for a pairs.txt protocol, or only 'bin' for an insightface .bin file"
    )


class VerificationImages(Dataset):
    """``(transform(image), index)`` over image files or RGB uint8 (H, W, 3) arrays.

    ``transform(image=rgb_uint8)["image"]`` (albumentations style); ``expected_size`` checks file images.
    """

    def __init__(
        self,
        images: Sequence[Path] | Sequence[np.ndarray],
        transform: Callable[..., dict[str, Any]],
        expected_size: tuple[int, int] | None = None,
    ) -> None:
        self.images = images
        self.transform = transform
        self.expected_size = expected_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = self.images[i]
        image = image if isinstance(image, np.ndarray) else read_image(image, self.expected_size)
        return self.transform(image=image)["image"], i
