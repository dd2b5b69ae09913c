"""Face alignment: a similarity warp of 5 landmarks onto the ArcFace template (as insightface's ``norm_crop``).

Landmarks, in order: left eye, right eye, nose tip, left/right mouth corner; (x, y) pixels, integers at pixel centres.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path, PurePath
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from facerec.data.decode import EXIF_ORIENTATION, encode_jpeg, read_image
from facerec.data.text import TextFileError, read_utf8

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
"""(5, 2) landmark positions (x, y) in a 112x112 ArcFace crop."""
ARCFACE_TEMPLATE.flags.writeable = False

TEMPLATE_SIZE = 112
"""Side of the square crop :data:`ARCFACE_TEMPLATE` is defined for."""

OUTPUT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""Extensions :func:`align_folder` can write."""

JPEG_QUALITY = 95

LANDMARK_LAYOUT = "lines 'path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 [score]'"

MAX_COORDINATE = 1e6
"""Landmark coordinates beyond +-this many pixels are refused."""

MIN_SPREAD = 1.0
"""Minimum RMS distance (pixels) of the 5 landmarks to their centre."""

MIN_FLATNESS = 1e-3
"""Minimum ratio of the landmarks' smaller to larger principal spread (not on one line)."""

MIN_FIT = 1e-6
"""Minimum similarity scale onto the template, relative to the spreads' ratio (1 for a template-like face)."""


class LandmarkRow(NamedTuple):
    """A landmark-file line: ``path`` (relative), ``landmarks`` (5, 2) float64 (x, y), ``score`` or None."""

    path: str
    landmarks: np.ndarray
    score: float | None


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as two ints (H, W); ValueError unless two positive integers."""
    if (
        len(size) != 2
        or not all(isinstance(side, int | np.integer) and not isinstance(side, bool) for side in size)
        or min(size) <= 0
    ):
        raise ValueError(f"crop size must be two positive integers (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def template(size: tuple[int, int] = (TEMPLATE_SIZE, TEMPLATE_SIZE)) -> np.ndarray:
    """Template (5, 2) float64 (x, y) for crop ``size`` (H, W): ARCFACE_TEMPLATE * H/112, x + (W-H)/2.

    Raises ValueError if ``size`` is not two positive integers.
    """
    height, width = check_size(size)
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
    """Least-squares similarity (scale, proper rotation, translation) mapping ``src`` onto ``dst`` (Umeyama).

    Args:
        src: (N, 2) points (x, y), N >= 2, not all equal.
        dst: (N, 2) points (x, y).

    Returns:
        (2, 3) float64 ``[s R | t]``, as ``cv2.warpAffine`` takes.

    Raises:
        ValueError: On mismatched or non-(N, 2) shapes, N < 2, non-finite values or all-equal ``src``.
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
    """Warps ``image`` (H, W, 3) uint8 so ``landmarks`` (5, 2) land on :func:`template` ``(size)``.

    Bilinear, black outside; returns the (size[0], size[1], 3) uint8 crop, channel order kept.

    Raises:
        ValueError: For a bad image, non-finite/degenerate/non-(5, 2) landmarks, or a bad ``size``.
    """
    height, width = check_size(size)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"image must be a non-empty (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    landmarks = _check_points(landmarks, "landmarks")
    if landmarks.shape != ARCFACE_TEMPLATE.shape:
        raise ValueError(f"landmarks must be 5 (x, y) points, shape (5, 2), got {landmarks.shape}")
    matrix = similarity_transform(landmarks, template((height, width)))
    return cv2.warpAffine(image, matrix, (width, height), borderValue=0.0)


def parse_landmark_line(line: str, where: str) -> LandmarkRow:
    """Parses ``path x1 y1 ... x5 y5 [score]`` (whitespace-separated).

    Args:
        line: The line.
        where: Location for messages, e.g. ``landmarks.txt:7``.

    Raises:
        TextFileError: Unless 11 or 12 fields with finite numbers.
    """
    fields = line.split()
    if len(fields) not in (11, 12):
        raise TextFileError(
            f"{where}: expected a path, 10 coordinates and an optional score (11 or 12 fields), got {len(fields)}"
        )
    numbers = []
    for column, text in enumerate(fields[1:], start=2):
        try:
            value = float(text)
        except ValueError:
            raise TextFileError(f"{where}: field {column} is not a number: {text!r}") from None
        if not math.isfinite(value):
            raise TextFileError(f"{where}: field {column} is not a finite number: {text!r}")
        numbers.append(value)
    landmarks = np.array(numbers[:10], dtype=np.float64).reshape(5, 2)
    return LandmarkRow(fields[0], landmarks, numbers[10] if len(numbers) == 11 else None)


def _numbered_rows(path: Path) -> list[tuple[int, LandmarkRow]]:
    text = read_utf8(path, LANDMARK_LAYOUT).decode("utf-8")
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            rows.append((number, parse_landmark_line(line, f"{path}:{number}")))
    return rows


def landmark_problem(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> tuple[int, str] | None:
    """First landmark set that cannot be aligned, and why (vectorised).

    Refused: non-finite or beyond +-:data:`MAX_COORDINATE`; a point off the image by more than half its side
    (if sizes given); spread under :data:`MIN_SPREAD`; collinear (:data:`MIN_FLATNESS`); template fit under
    :data:`MIN_FIT`.

    Args:
        landmarks: (N, 5, 2) (x, y).
        image_sizes: (N, 2) image (H, W), or None to skip the on-image check.

    Returns:
        ``(index, reason)``, or None if all can be aligned.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    with np.errstate(all="ignore"):
        wild = ~(np.abs(points) <= MAX_COORDINATE).all(axis=(1, 2))
        points = np.where(wild[:, None, None], ARCFACE_TEMPLATE, points)  # keeps the checks below finite
        x, y = np.moveaxis(points - points.mean(axis=1, keepdims=True), 2, 0)
        xx, yy, xy = (x * x).sum(axis=1), (y * y).sum(axis=1), (x * y).sum(axis=1)
        variance = (xx + yy) / 5
        root = np.hypot((xx - yy) / 2, xy)  # the scatter matrix's eigenvalues are (xx + yy) / 2 +- root
        flat = (xx + yy) / 2 - root < MIN_FLATNESS**2 * ((xx + yy) / 2 + root)
        # Umeyama's scale in closed form (2-D): trace(S D) of the covariance [[p, q], [r, s]] with the template is
        # s1 + s2 if det >= 0, else s1 - s2: both equal sqrt(|C|_F^2 + 2 det C) = hypot(p + s, r - q).
        template_x, template_y = (ARCFACE_TEMPLATE - ARCFACE_TEMPLATE.mean(axis=0)).T
        p, q = x @ template_x / 5, y @ template_x / 5
        r, s = x @ template_y / 5, y @ template_y / 5
        fit = np.hypot(p + s, r - q) / np.sqrt(variance * ARCFACE_TEMPLATE.var(axis=0).sum())  # in [0, 1]
    checks = [
        (wild, f"coordinates must be finite numbers within +-{MAX_COORDINATE:g} pixels"),
        (variance < MIN_SPREAD**2, f"the 5 points coincide (they spread less than {MIN_SPREAD:g} pixel)"),
        (flat, "the 5 points lie on one line"),
        (~(fit >= MIN_FIT), "the similarity onto the ArcFace template has no positive scale (not a face's layout)"),
    ]
    if image_sizes is not None:
        sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 1, 2)[..., ::-1]  # (W, H) per set
        off = ((points < -sizes / 2) | (points > sizes * 1.5 - 1)).any(axis=(1, 2))
        checks.insert(1, (off & ~wild, "a point lies off the image by more than half the image's size"))
    bad = np.logical_or.reduce([flags for flags, _ in checks])
    if not bad.any():
        return None
    index = int(np.argmax(bad))
    reason = next(reason for flags, reason in checks if flags[index])
    return index, f"{reason}: {np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)[index].tolist()}"


def check_landmark_rows(rows: list[tuple[int, LandmarkRow]], path: Path, image_sizes: np.ndarray | None = None) -> None:
    """Raises TextFileError naming ``path:line`` for the first row :func:`landmark_problem` refuses."""
    problem = landmark_problem(np.stack([row.landmarks for _, row in rows]), image_sizes) if rows else None
    if problem is not None:
        index, reason = problem
        raise TextFileError(
            f"{path}:{rows[index][0]}: landmarks of {rows[index][1].path} cannot be aligned: {reason}; expected "
            "the 5 points (x, y) of a face in the image: eyes, nose tip, mouth corners"
        )


def read_landmarks(path: str | Path) -> list[LandmarkRow]:
    """Reads (UTF-8, :data:`LANDMARK_LAYOUT`) and checks a landmark file; TextFileError names the bad line."""
    return [row for _, row in read_landmark_lines(path)]


def read_landmark_lines(path: str | Path) -> list[tuple[int, LandmarkRow]]:
    """:func:`read_landmarks` with each row's 1-based line number."""
    path = Path(path)
    rows = _numbered_rows(path)
    check_landmark_rows(rows, path)
    return rows


def _check_relative(path: str, where: str) -> None:
    pure = PurePath(path)
    if pure.is_absolute() or pure.drive or path.startswith(("/", "\\")) or ".." in pure.parts:
        raise TextFileError(f"{where}: image path {path!r} must be relative to the image folder, without '..'")


def _encode(image: np.ndarray, suffix: str) -> bytes:
    if suffix in (".jpg", ".jpeg"):
        return encode_jpeg(image, JPEG_QUALITY)
    ok, buffer = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{suffix} encoding failed")
    return buffer.tobytes()


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) as :func:`~facerec.data.decode.read_image` returns it (EXIF-rotated), from the header if PIL reads it.

    Raises CorruptImageError if unreadable.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        return (width, height) if turned else (height, width)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return read_image(path).shape[:2]


def check_folders(src: Path, dst: Path) -> None:
    """Refuses an output folder ``dst`` that is, holds or lies inside the image folder ``src`` (links resolved)."""
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src:
        raise ValueError(f"the output folder must differ from the image folder {src}: crops would replace the images")
    if real_dst.is_relative_to(real_src):
        raise ValueError(
            f"the output folder {dst} is inside the image folder {src} ({real_dst} in {real_src}): crops could "
            "replace listed images; choose an output folder outside it"
        )
    if real_src.is_relative_to(real_dst):
        raise ValueError(
            f"the image folder {src} is inside the output folder {dst} ({real_src} in {real_dst}): crops could "
            "replace listed images; choose an output folder outside it"
        )


def check_link(image: Path, target: Path, src: Path, dst: Path, where: str) -> None:
    """Refuses an image linked into ``dst`` or a crop linked into ``src``."""
    if image.resolve().is_relative_to(dst.resolve()):
        raise ValueError(
            f"{where}: image {image} is {image.resolve()}, inside the output folder {dst}: a crop could replace it; "
            "choose an output folder that holds no listed image"
        )
    if target.resolve().is_relative_to(src.resolve()):
        raise ValueError(
            f"{where}: the crop {target} would be written to {target.resolve()}, inside the image folder {src} (a "
            f"symbolic link under {dst}); choose an output folder without links into it"
        )


def align_folder(
    src: str | Path, dst: str | Path, landmarks_file: str | Path, size: tuple[int, int] = (112, 112)
) -> int:
    """Aligns every image a landmark file lists: ``src/PATH`` -> ``dst/PATH``, same format (JPEG quality 95).

    All checked before writing: ``dst`` neither is, contains nor is inside ``src`` (links resolved); each path
    relative without ``..``, unique, with an extension in :data:`OUTPUT_EXTENSIONS`, an existing file; landmarks
    alignable and on the image. Crops are written atomically (temp + rename); an undecodable image stops the run.

    Args:
        src: Folder the listed paths are relative to.
        dst: Output folder.
        landmarks_file: See :func:`read_landmarks`.
        size: Crop (H, W).

    Returns:
        Number of crops written.

    Raises:
        FileNotFoundError: Missing landmark file, folder or image.
        ValueError: ``dst`` overlapping ``src`` (or linked so), or a bad ``size``.
        TextFileError: Empty file, bad line, path or landmarks (names the line).
        CorruptImageError: An image cannot be decoded.
    """
    src, dst, landmarks_file = Path(src), Path(dst), Path(landmarks_file)
    size = check_size(size)
    if not src.is_dir():
        raise FileNotFoundError(f"image folder not found: {src}")
    check_folders(src, dst)
    rows = _numbered_rows(landmarks_file)
    first_line: dict[str, int] = {}
    for number, row in rows:
        where = f"{landmarks_file}:{number}"
        _check_relative(row.path, where)
        key = PurePath(row.path).as_posix()
        if key in first_line:
            raise TextFileError(f"{where}: image {row.path} is already listed on line {first_line[key]}")
        first_line[key] = number
        if PurePath(row.path).suffix.lower() not in OUTPUT_EXTENSIONS:
            raise TextFileError(f"{where}: cannot write {row.path}: the extension must be one of {OUTPUT_EXTENSIONS}")
        if not (src / row.path).is_file():
            raise FileNotFoundError(f"{where}: image not found: {src / row.path}")
        check_link(src / row.path, dst / row.path, src, dst, where)
    check_landmark_rows(rows, landmarks_file, np.array([image_size(src / row.path) for _, row in rows]))
    for _, row in rows:
        write_crop(dst / row.path, align_face(read_image(src / row.path), row.landmarks, size))
    return len(rows)


def write_crop(target: Path, crop: np.ndarray) -> None:
    """Writes an RGB uint8 crop to ``target`` in its extension's format, atomically (temporary file + rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_bytes(_encode(crop, target.suffix.lower()))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
