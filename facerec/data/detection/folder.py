"""``python -m facerec.data align SRC DST --detect``: every photo of a folder detected, one face kept and aligned
to ``DST`` under the same relative path, and a report of every photo that did not give exactly one clear face.

``DST`` gets, beside the crops: ``detection_report.json`` (settings, counts, timing and each photo with no face,
several faces, only low scores or an unreadable file, with every face's box, score and landmarks),
``detection_report.txt`` (the summary table) and ``landmarks.txt`` (the kept faces' landmarks in the format of
``align --landmarks``, to align again at another size without detecting; paths with whitespace, which that format
cannot hold, are left out of it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import Progress

from facerec.data.align import OUTPUT_EXTENSIONS, TEMPLATE_SIZE, check_folders, check_link, check_size, write_crop
from facerec.data.decode import CorruptImageError, read_image
from facerec.data.detection.choice import DEFAULT_MIN_SCORE, FaceChoice
from facerec.data.detection.mtcnn import FaceDetector
from facerec.data.detection.photos import align_photos
from facerec.data.detection.report import DetectionReport, detector_settings
from facerec.data.training.folder import list_image_files

REPORT_JSON, REPORT_TABLE, LANDMARKS_FILE = "detection_report.json", "detection_report.txt", "landmarks.txt"
READ_CHUNK = 64
"""Photos decoded and held in memory at a time."""


def _landmark_line(path: str, choice: FaceChoice) -> str:
    """``path x1 y1 ... x5 y5 score`` line of the kept face; empty for a path with whitespace (the format's
    separator), which ``landmarks.txt`` leaves out.
    """
    if any(char.isspace() for char in path):
        return ""
    points = " ".join(f"{value:.2f}" for value in choice.landmarks.reshape(-1))
    return f"{path} {points} {choice.faces.scores[choice.index]:.5f}\n"


def check_output_folder(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuses, before any work, a ``dst`` that overlaps ``src``, is a file, or is a non-empty folder (unless
    ``overwrite``: then crops and reports of the same names are replaced, other files are left).
    """
    check_folders(src, dst)
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"the output folder {dst} is a file: name a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(
            f"the output folder {dst} is not empty: pass --overwrite to write into it (crops and reports of the "
            "same names are replaced, other files are left), or choose a new folder"
        )


def align_photo_folder(
    src: str | Path,
    dst: str | Path,
    detector: FaceDetector,
    size: tuple[int, int] = (TEMPLATE_SIZE, TEMPLATE_SIZE),
    min_score: float = DEFAULT_MIN_SCORE,
    overwrite: bool = False,
    batch_size: int = 16,
) -> DetectionReport:
    """Aligns the kept face of every photo under ``src`` (any depth: identity folders or a flat folder) to
    ``dst/<same relative path>`` and writes the report files (module docstring).

    Everything is checked before the first photo is read: ``src`` holds images, each with an extension crops can
    be written in; ``dst`` is new or empty (or ``overwrite``) and neither holds nor lies in ``src``, nor links
    into it. A photo without a kept face gets no crop and an entry in the report; an undecodable one too.

    Args:
        src: The photos.
        dst: Output folder.
        detector: The face detector (its device is used).
        size: Crop (H, W).
        min_score: Minimum score of a kept face (:func:`~facerec.data.detection.choice.choose_face`).
        overwrite: Allow a non-empty ``dst``.
        batch_size: Photos per detector pass.

    Returns:
        The report.

    Raises:
        FileNotFoundError: ``src`` is not a folder.
        FileExistsError: ``dst`` is not empty and not ``overwrite``.
        ValueError: No images, an extension crops cannot be written in, overlapping folders, a bad setting.
    """
    src, dst = Path(src), Path(dst)
    size = check_size(size)
    if not 0 <= min_score <= 1:
        raise ValueError(f"--min-score must be in [0, 1], got {min_score}")
    if not src.is_dir():
        raise FileNotFoundError(f"photo folder not found: {src}")
    check_output_folder(src, dst, overwrite)
    files = list_image_files(src)
    if not files:
        raise ValueError(f"no photos under {src}")
    paths = [file.relative_to(src).as_posix() for file in files]
    unwritable = [path for path in paths if Path(path).suffix.lower() not in OUTPUT_EXTENSIONS]
    if unwritable:
        raise ValueError(
            f"{len(unwritable)} photos have an extension crops cannot be written in (e.g. {unwritable[0]}): "
            f"convert them to one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    for file, path in zip(files, paths, strict=True):
        check_link(file, dst / path, src, dst, path)
    report = DetectionReport(
        {"src": str(src), "dst": str(dst), "size": list(size)} | detector_settings(detector, min_score)
    )
    dst.mkdir(parents=True, exist_ok=True)
    landmark_lines = []
    start = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task(f"aligning {len(files)} photos", total=len(files))
        for first in range(0, len(files), READ_CHUNK):
            readable, images = [], []
            for path in paths[first : first + READ_CHUNK]:
                try:
                    images.append(read_image(src / path))
                    readable.append(path)
                except CorruptImageError as error:
                    report.add_unreadable(path, error)
            for path, photo in zip(readable, align_photos(images, detector, size, min_score, batch_size), strict=True):
                report.add(path, photo.choice)
                if photo.crop is not None:
                    write_crop(dst / path, photo.crop)
                    landmark_lines.append(_landmark_line(path, photo.choice))
            progress.advance(task, len(paths[first : first + READ_CHUNK]))
    report.seconds = time.perf_counter() - start
    (dst / LANDMARKS_FILE).write_text("".join(line for line in landmark_lines if line), encoding="utf-8")
    (dst / REPORT_JSON).write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
    (dst / REPORT_TABLE).write_text(report.table() + "\n", encoding="utf-8")
    return report
