"""IJB-B / IJB-C in their official layout, and their images aligned by the provided landmarks.

``ROOT/meta/<prefix>_face_tid_mid.txt`` (``image template media`` per image),
``ROOT/meta/<prefix>_template_pair_label.txt`` (``template1 template2 label`` per pair),
``ROOT/meta/<prefix>_name_5pts_score.txt`` (``image x1 y1 … x5 y5 score`` per image) and the images
in ``ROOT/loose_crop/``; ``prefix`` is ``ijbb`` or ``ijbc``. The files are untrusted: :func:`load_ijb`
checks every line of each and their agreement before any image is read.
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

    Everything is checked here, before any image is read: each file's lines (see the readers), a faceness score
    that is not positive (D1 weights each image by it), a landmark file that lacks an image, and a pair naming a
    template without images.

    Raises:
        FileNotFoundError: If a meta file or ``loose_crop/`` is missing.
        TextFileError: If a file is malformed or a folder, or the files disagree (naming the file and line).
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
    """The landmark rows of images ``names``, in that order (for a landmark file in another order).

    Raises:
        TextFileError: If the file lists an image twice, or lacks one of ``names``.
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
    """Refuses a pair naming a template that no image of ``media_file`` belongs to, naming its line.

    Raises:
        TextFileError: Naming ``pairs_file``'s line, the template and how many pairs name unknown templates.
    """
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
    """Images aligned by their 5 landmarks (:func:`facerec.data.align.align_face`) as ``(transform(crop), index)``.

    Landmarks off an image by more than half its size (:func:`facerec.data.align.landmark_problem`) are refused
    when the image is read, naming it: they would give a black crop.

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
        image = read_image(self.images[i])
        problem = landmark_problem(self.landmarks[i], np.array([image.shape[:2]]))
        if problem is not None:
            raise TextFileError(f"{self.images[i]} ({image.shape[0]}x{image.shape[1]}): its landmarks: {problem[1]}")
        return self.transform(image=align_face(image, self.landmarks[i], self.size))["image"], i
