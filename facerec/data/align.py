"""Face alignment by 5 landmarks: a similarity warp onto the ArcFace template.

The 5 landmarks are, in this order and as seen in the image: left eye, right eye, nose tip, left mouth
corner, right mouth corner, in (x, y) pixel coordinates (OpenCV's convention: integer values are pixel
centres). :func:`align_face` finds the least-squares similarity (rotation, uniform scale, translation, no
reflection) that maps them onto :func:`template` and warps the image with it, which is what insightface's
``norm_crop`` does: crops match those the public ArcFace models were trained and evaluated on.

Landmark files hold one image per line, ``path x1 y1 ... x5 y5 [score]`` (IJB's
``ijbc_name_5pts_score.txt`` is one); :func:`align_folder` aligns every image they list.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path, PurePath
from typing import NamedTuple

import cv2
import numpy as np

from facerec.data.decode import encode_jpeg, read_image

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float64,
)
"""(5, 2) landmark positions (x, y) in a 112x112 crop, as insightface's ArcFace models expect them."""
ARCFACE_TEMPLATE.flags.writeable = False

TEMPLATE_SIZE = 112
"""The side of the square crop :data:`ARCFACE_TEMPLATE` is defined for."""

OUTPUT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File extensions :func:`align_folder` can write (colour formats OpenCV encodes)."""

JPEG_QUALITY = 95


class LandmarkRow(NamedTuple):
    """One line of a landmark file.

    Attributes:
        path: The image path as written in the file (relative to the image folder).
        landmarks: (5, 2) float64 landmarks (x, y), in the order of :data:`ARCFACE_TEMPLATE`.
        score: The detector score, or None if the line has none.
    """

    path: str
    landmarks: np.ndarray
    score: float | None


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if (
        len(size) != 2
        or not all(isinstance(side, int | np.integer) and not isinstance(side, bool) for side in size)
        or min(size) <= 0
    ):
        raise ValueError(f"crop size must be two positive integers (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def template(size: tuple[int, int] = (TEMPLATE_SIZE, TEMPLATE_SIZE)) -> np.ndarray:
    """The 5 landmark positions for an aligned crop of ``size``.

    One rule for every size: :data:`ARCFACE_TEMPLATE` is scaled by ``H / 112``, then shifted along x by
    ``(W - H) / 2`` so the face stays horizontally centred. 112x112 gives the template itself; 112x96
    gives x - 8 (insightface's 112x96 crops: the 112x112 crop with 8 columns cut on each side); 128x128
    scales it by 128/112.

    Args:
        size: The crop's (H, W) in pixels.

    Returns:
        A new (5, 2) float64 array of (x, y) positions.

    Raises:
        ValueError: If ``size`` is not two positive integers.
    """
    height, width = _check_size(size)
    points = ARCFACE_TEMPLATE * (height / TEMPLATE_SIZE)
    points[:, 0] += (width - height) / 2
    return points


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be an (N, 2) array of (x, y) points, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} holds non-finite values (nan or inf): {points.tolist()}")
    return points


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity mapping ``src`` points onto ``dst`` points (Umeyama, 1991).

    Minimises ``sum |s R src_i + t - dst_i|^2`` over scale ``s``, rotation ``R`` (a proper rotation:
    no reflection) and translation ``t``, in closed form: with the centred point sets and their
    covariance ``C = dst_c^T src_c / N = U S V^T``, ``R = U D V^T`` where ``D = diag(1, det(U) det(V))``,
    ``s = trace(S D) / var(src)`` and ``t = mean(dst) - s R mean(src)``. This is the estimate of
    scikit-image's ``SimilarityTransform`` that insightface's ``norm_crop`` uses.

    Args:
        src: (N, 2) source points (x, y), N >= 2, not all equal.
        dst: (N, 2) destination points (x, y).

    Returns:
        The (2, 3) float64 matrix ``[[a, -b, tx], [b, a, ty]]`` (``s R | t``) mapping ``(x, y, 1)`` from
        ``src`` to ``dst``, the layout ``cv2.warpAffine`` takes.

    Raises:
        ValueError: If the shapes differ or are not (N, 2) with N >= 2, a value is not finite, or all
            ``src`` points are equal (no scale or rotation can be estimated).
    """
    src, dst = _check_points(src, "src"), _check_points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape, got {src.shape} and {dst.shape}")
    if len(src) < 2:
        raise ValueError(f"a similarity needs at least 2 point pairs, got {len(src)}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    src_variance = (src_centred**2).sum() / len(src)
    if src_variance == 0:
        raise ValueError(f"src points are all equal ({src[0].tolist()}): the similarity is undefined")
    u, singular, vt = np.linalg.svd(dst_centred.T @ src_centred / len(src))
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / src_variance
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Warps a face onto the template so its 5 landmarks land on :func:`template` ``(size)``.

    Bilinear interpolation; pixels from outside the image are black (as insightface's ``norm_crop``).

    Args:
        image: (H, W, 3) uint8 image (channel order is kept).
        landmarks: (5, 2) landmarks (x, y) in ``image``, in the order of :data:`ARCFACE_TEMPLATE`.
        size: The crop's (H, W).

    Returns:
        The (size[0], size[1], 3) uint8 aligned crop.

    Raises:
        ValueError: For an image that is not (H, W, 3) uint8, landmarks that are not (5, 2) finite
            values or are all equal, or a bad ``size``.
    """
    height, width = _check_size(size)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"image must be a non-empty (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    landmarks = _check_points(landmarks, "landmarks")
    if landmarks.shape != ARCFACE_TEMPLATE.shape:
        raise ValueError(f"landmarks must be 5 (x, y) points, shape (5, 2), got {landmarks.shape}")
    matrix = similarity_transform(landmarks, template((height, width)))
    return cv2.warpAffine(image, matrix, (width, height), borderValue=0.0)


def parse_landmark_line(line: str, where: str) -> LandmarkRow:
    """Parses one landmark-file line ``path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 [score]``.

    Args:
        line: The line; fields are separated by spaces and/or tabs.
        where: Where the line is, for error messages (``landmarks.txt:7``).

    Returns:
        The parsed row.

    Raises:
        ValueError: If the line does not have 11 or 12 fields, or a number is not a finite float;
            the message starts with ``where``.
    """
    fields = line.split()
    if len(fields) not in (11, 12):
        raise ValueError(
            f"{where}: expected a path, 10 coordinates and an optional score (11 or 12 fields), got {len(fields)}"
        )
    numbers = []
    for column, text in enumerate(fields[1:], start=2):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{where}: field {column} is not a number: {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: field {column} is not a finite number: {text!r}")
        numbers.append(value)
    landmarks = np.array(numbers[:10], dtype=np.float64).reshape(5, 2)
    return LandmarkRow(fields[0], landmarks, numbers[10] if len(numbers) == 11 else None)


def _numbered_rows(path: Path) -> list[tuple[int, LandmarkRow]]:
    rows = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                rows.append((number, parse_landmark_line(line, f"{path}:{number}")))
    return rows


def read_landmarks(path: str | Path) -> list[LandmarkRow]:
    """Reads a landmark file: one ``path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 [score]`` line per image.

    Fields are separated by spaces and/or tabs, so image paths cannot contain spaces; blank lines are
    skipped. Coordinates are in the order of :data:`ARCFACE_TEMPLATE`. IJB's ``ijbc_name_5pts_score.txt``
    has this format.

    Args:
        path: The landmark file (UTF-8 text).

    Returns:
        The rows in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For a bad line; the message names the file and the 1-based line number.
    """
    return [row for _, row in _numbered_rows(Path(path))]


def _check_relative(path: str, where: str) -> None:
    pure = PurePath(path)
    if pure.is_absolute() or pure.drive or path.startswith(("/", "\\")) or ".." in pure.parts:
        raise ValueError(f"{where}: image path {path!r} must be relative to the image folder, without '..'")


def _encode(image: np.ndarray, suffix: str) -> bytes:
    if suffix in (".jpg", ".jpeg"):
        return encode_jpeg(image, JPEG_QUALITY)
    ok, buffer = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{suffix} encoding failed")
    return buffer.tobytes()


def align_folder(
    src: str | Path, dst: str | Path, landmarks_file: str | Path, size: tuple[int, int] = (112, 112)
) -> int:
    """Aligns every image a landmark file lists: ``src/PATH`` -> ``dst/PATH``.

    The landmark file is checked first: every line parses, every path is relative (no absolute path,
    no ``..``), listed once, has an extension in :data:`OUTPUT_EXTENSIONS` and names an existing file
    under ``src``; on any error nothing is written. Crops keep the relative path and format
    (JPEG at quality 95); parent folders are created and existing files replaced. Each file is written
    to a temporary name and renamed, so an interrupted run leaves no half-written crop; an image that
    cannot be decoded stops the run with the crops before it written.

    Args:
        src: The folder the landmark file's paths are relative to.
        dst: The output folder; must not be ``src``.
        landmarks_file: See :func:`read_landmarks`.
        size: The crops' (H, W).

    Returns:
        The number of crops written.

    Raises:
        FileNotFoundError: If the landmark file or a listed image does not exist (names its line).
        ValueError: For a bad line or path (names the line), ``dst`` equal to ``src``, or a bad ``size``.
        CorruptImageError: If a listed image cannot be decoded.
    """
    src, dst, landmarks_file = Path(src), Path(dst), Path(landmarks_file)
    size = _check_size(size)
    if not src.is_dir():
        raise FileNotFoundError(f"image folder not found: {src}")
    if dst.resolve() == src.resolve():
        raise ValueError(f"the output folder must differ from the image folder {src}: crops would replace the images")
    rows = _numbered_rows(landmarks_file)
    first_line: dict[str, int] = {}
    for number, row in rows:
        where = f"{landmarks_file}:{number}"
        _check_relative(row.path, where)
        key = PurePath(row.path).as_posix()
        if key in first_line:
            raise ValueError(f"{where}: image {row.path} is already listed on line {first_line[key]}")
        first_line[key] = number
        if PurePath(row.path).suffix.lower() not in OUTPUT_EXTENSIONS:
            raise ValueError(f"{where}: cannot write {row.path}: the extension must be one of {OUTPUT_EXTENSIONS}")
        if not (src / row.path).is_file():
            raise FileNotFoundError(f"{where}: image not found: {src / row.path}")
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for _, row in rows:
        crop = align_face(read_image(src / row.path), row.landmarks, size)
        target = dst / row.path
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{tag}.tmp")
        try:
            temporary.write_bytes(_encode(crop, target.suffix.lower()))
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return len(rows)
