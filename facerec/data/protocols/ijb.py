"""IJB-B / IJB-C in the official layout: ``ROOT/meta/<prefix>_{face_tid_mid,template_pair_label,name_5pts_score}.txt``
and images in ``ROOT/loose_crop/``, aligned by the provided landmarks. Untrusted: all checked before any image is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from facerec.data.align import LandmarkRow, align_face, landmark_problem, read_landmark_lines
from facerec.data.decode import read_image
from facerec.data.protocols.ijb_meta import pair_line_number, read_template_media, read_template_pairs
from facerec.data.text import TextFileError


@dataclass
class IJBSet:
    """One IJB protocol, read (N images, P pairs).

    Attributes:
        name: ``ijbb`` or ``ijbc``.
        images: N image files, in ``face_tid_mid`` order.
        templates, medias: (N,) template / media id per image.
        landmarks: (N, 5, 2) (x, y) pixels.
        scores: (N,) detector score (1 where absent).
        template1, template2, labels: (P,) pairs; label 1 = same subject.
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
    """``prefix``, else the one ``ROOT/meta/<prefix>_face_tid_mid.txt`` found.

    Raises FileNotFoundError if none or several (without ``prefix``).
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
    """Reads and checks an IJB protocol under ``root`` (``meta/``, ``loose_crop/``); ``prefix``: default the one found.

    Checked before any image is read: every line (see the readers), positive faceness scores (D1 weights by
    them), a landmark row per image, and pairs naming only templates with images.

    Raises:
        FileNotFoundError: A meta file or ``loose_crop/`` is missing.
        TextFileError: A file is malformed or a folder, or the files disagree (names file and line).
    """
    root = Path(root)
    prefix = protocol_prefix(root, prefix)
    meta = root / "meta"
    paths = {kind: meta / f"{prefix}_{kind}.txt" for kind in ("face_tid_mid", "template_pair_label", "name_5pts_score")}
    for path in [*paths.values(), root / "loose_crop"]:
        if not path.exists():
            raise FileNotFoundError(f"IJB protocol {prefix} under {root}: {path} is missing")
    if not (root / "loose_crop").is_dir():
        raise TextFileError(f"IJB protocol {prefix} under {root}: {root / 'loose_crop'} must be the folder of images")
    names, templates, medias = read_template_media(paths["face_tid_mid"])
    template1, template2, labels = read_template_pairs(paths["template_pair_label"])
    numbered = read_landmark_lines(paths["name_5pts_score"])
    for number, row in numbered:
        if row.score is not None and not row.score > 0:
            raise TextFileError(
                f"{paths['name_5pts_score']}:{number}: faceness score of {row.path} is {row.score:g}: expected a "
                "positive detector score (D1, use_detector_score, multiplies each image's feature by it)"
            )
    rows = [row for _, row in numbered]
    if [row.path for row in rows] != names:
        rows = rows_by_name(rows, names, paths["name_5pts_score"])
    check_pair_templates(templates, template1, template2, paths["template_pair_label"], paths["face_tid_mid"])
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
    """Landmark rows reordered to ``names``.

    Raises TextFileError if the file lists an image twice or lacks one.
    """
    by_name = {row.path: row for row in rows}
    if len(by_name) != len(rows):
        raise TextFileError(
            f"{source} lists an image twice and in another order than the image list: cannot match them"
        )
    missing = [name for name in names if name not in by_name]
    if missing:
        raise TextFileError(f"{source} has no landmarks for {len(missing)} images, e.g. {', '.join(missing[:3])}")
    return [by_name[name] for name in names]


def check_pair_templates(
    templates: np.ndarray, template1: np.ndarray, template2: np.ndarray, pairs_file: Path, media_file: Path
) -> None:
    """Raises TextFileError naming ``pairs_file``'s line for a pair naming a template with no images."""
    known = np.unique(templates)
    for column, name in ((template1, "template_id1"), (template2, "template_id2")):
        unknown = np.flatnonzero(known[np.minimum(np.searchsorted(known, column), len(known) - 1)] != column)
        if len(unknown):
            index = int(unknown[0])
            raise TextFileError(
                f"{pairs_file}:{pair_line_number(pairs_file, index)}: {name} {int(column[index])} has no images in "
                f"{media_file} ({len(unknown)} pairs name unknown templates): expected templates of the image list"
            )


class AlignedImages(Dataset):
    """``(transform(crop), index)`` for images aligned by their 5 landmarks (:func:`~facerec.data.align.align_face`).

    Args:
        images: Image files.
        landmarks: (N, 5, 2).
        size: Crop (H, W).
        transform: ``transform(image=rgb_uint8)["image"]`` (albumentations style).

    Reading raises TextFileError for landmarks off the image by more than half its size.
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
        image = read_image(self.images[i])
        problem = landmark_problem(self.landmarks[i], np.array([image.shape[:2]]))
        if problem is not None:
            raise TextFileError(f"{self.images[i]} ({image.shape[0]}x{image.shape[1]}): its landmarks: {problem[1]}")
        return self.transform(image=align_face(image, self.landmarks[i], self.size))["image"], i
