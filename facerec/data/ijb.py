"""IJB-B / IJB-C in their official layout, and their images aligned by the provided landmarks.

``ROOT/meta/<prefix>_face_tid_mid.txt`` (``image template media`` per image),
``ROOT/meta/<prefix>_template_pair_label.txt`` (``template1 template2 label`` per pair),
``ROOT/meta/<prefix>_name_5pts_score.txt`` (``image x1 y1 … x5 y5 score`` per image) and the images
in ``ROOT/loose_crop/``; ``prefix`` is ``ijbb`` or ``ijbc``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from facerec.data.align import LandmarkRow, align_face, read_landmarks
from facerec.data.decode import read_image
from facerec.eval.ijb import read_template_media, read_template_pairs


@dataclass
class IJBSet:
    """One IJB protocol's files, read.

    Attributes:
        name: The protocol's prefix, ``ijbb`` or ``ijbc``.
        images: (N,) image files, in the order of ``<prefix>_face_tid_mid.txt``.
        templates: (N,) template id of each image.
        medias: (N,) media id of each image.
        landmarks: (N, 5, 2) the 5 landmarks of each image (x, y pixels).
        scores: (N,) the detector score of each image (1 where the landmark file has none).
        template1: (P,) first template of each pair.
        template2: (P,) second template of each pair.
        labels: (P,) 1 if the pair shows one subject, else 0.
    """

    name: str
    images: list[Path]
    templates: np.ndarray
    medias: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    template1: np.ndarray
    template2: np.ndarray
    labels: np.ndarray


def protocol_prefix(root: Path, prefix: str | None) -> str:
    """``prefix`` if given, else the one ``ROOT/meta/<prefix>_face_tid_mid.txt`` found.

    Raises:
        FileNotFoundError: If ``ROOT/meta`` holds none, or several and ``prefix`` is not given.
    """
    if prefix:
        return prefix
    found = sorted(path.name.removesuffix("_face_tid_mid.txt") for path in (root / "meta").glob("*_face_tid_mid.txt"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{root}/meta holds {len(found)} *_face_tid_mid.txt files ({', '.join(found) or 'none'}): expected the "
            "official IJB layout (meta/ijbc_face_tid_mid.txt, ...); name the protocol with prefix=ijbb|ijbc"
        )
    return found[0]


def load_ijb(root: str | Path, prefix: str | None = None) -> IJBSet:
    """Reads an IJB-B / IJB-C protocol from its official layout under ``root``.

    Args:
        root: The folder holding ``meta/`` and ``loose_crop/``.
        prefix: ``ijbb`` or ``ijbc``; default the one protocol found in ``root/meta``.

    Raises:
        FileNotFoundError: If a meta file or ``loose_crop/`` is missing.
        ValueError: If the landmark file does not cover every image, or a file is malformed (naming its line).
    """
    root = Path(root)
    prefix = protocol_prefix(root, prefix)
    meta = root / "meta"
    paths = {kind: meta / f"{prefix}_{kind}.txt" for kind in ("face_tid_mid", "template_pair_label", "name_5pts_score")}
    for path in [*paths.values(), root / "loose_crop"]:
        if not path.exists():
            raise FileNotFoundError(f"IJB protocol {prefix} under {root}: {path} is missing")
    names, templates, medias = read_template_media(paths["face_tid_mid"])
    template1, template2, labels = read_template_pairs(paths["template_pair_label"])
    rows = read_landmarks(paths["name_5pts_score"])
    if [row.path for row in rows] != names:
        rows = rows_by_name(rows, names, paths["name_5pts_score"])
    return IJBSet(
        name=prefix,
        images=[root / "loose_crop" / name for name in names],
        templates=templates,
        medias=medias,
        landmarks=np.stack([row.landmarks for row in rows]),
        scores=np.array([1.0 if row.score is None else row.score for row in rows]),
        template1=template1,
        template2=template2,
        labels=labels,
    )


def rows_by_name(rows: list[LandmarkRow], names: list[str], source: Path) -> list[LandmarkRow]:
    """The landmark rows of images ``names``, in that order (for a landmark file in another order).

    Raises:
        ValueError: If the file lists an image twice, or lacks one of ``names``.
    """
    by_name = {row.path: row for row in rows}
    if len(by_name) != len(rows):
        raise ValueError(f"{source} lists an image twice and in another order than the image list: cannot match them")
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"{source} has no landmarks for {len(missing)} images, e.g. {', '.join(missing[:3])}")
    return [by_name[name] for name in names]


class AlignedImages(Dataset):
    """Images aligned by their 5 landmarks (:func:`facerec.data.align.align_face`) as ``(transform(crop), index)``.

    Args:
        images: Image files.
        landmarks: (N, 5, 2) landmarks of each image.
        size: (H, W) of the aligned crops.
        transform: Called as ``transform(image=rgb_uint8)["image"]`` on each crop (albumentations style).
    """

    def __init__(
        self,
        images: list[Path],
        landmarks: np.ndarray,
        size: tuple[int, int],
        transform: Callable[..., dict[str, Any]],
    ) -> None:
        if len(images) != len(landmarks):
            raise ValueError(f"{len(images)} images but {len(landmarks)} landmark sets")
        self.images = images
        self.landmarks = landmarks
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        crop = align_face(read_image(self.images[i]), self.landmarks[i], self.size)
        return self.transform(image=crop)["image"], i
