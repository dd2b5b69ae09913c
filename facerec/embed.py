"""``python -m facerec.embed MODEL SRC --out FILE``: L2-normalised embeddings of a folder or a list of images.

FILE: ``.npz`` (``embeddings`` (N, E) float32, ``paths`` (N,) str) or ``.parquet`` (``path``, ``embedding``).
With ``--detect`` the images are raw photos: each one's face is detected, chosen and aligned first
(:meth:`facerec.inference.FaceEmbedder.embed_photos`); photos without a kept face are left out of FILE and listed,
with every photo that had several faces, in the detection report (``--report``, default ``FILE.detection.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import Progress

from facerec.data.decode import IMAGE_EXTENSIONS, read_image
from facerec.data.detection.choice import DEFAULT_MIN_SCORE
from facerec.data.detection.mtcnn import FaceDetector
from facerec.data.detection.report import DetectionReport, detector_settings
from facerec.data.training.folder import list_image_files
from facerec.data.verification.sets import VerificationImages
from facerec.eval.verification import l2_normalize
from facerec.inference import FaceEmbedder, embed_dataset, load_model
from facerec.run.outputs import check_distinct, check_output_file

OUTPUT_FORMATS = (".npz", ".parquet")
DETECT_CHUNK = 256
"""Photos decoded and held in memory at a time by ``--detect``."""


def list_images(src: str | Path) -> tuple[list[Path], list[str]]:
    """Images to embed and their stored names.

    Args:
        src: A folder (images at any depth, hidden skipped, names relative, sorted) or a text file of image
            paths (relative to its folder; names as written; blank and ``#`` lines skipped; file order).

    Raises:
        FileNotFoundError: ``src`` or listed images missing (all named).
        ValueError: No image.
    """
    src = Path(src)
    if src.is_dir():
        files = list_image_files(src)
        names = [path.relative_to(src).as_posix() for path in files]
    elif src.is_file():
        names = [line.strip() for line in src.read_text().splitlines() if line.strip() and not line.startswith("#")]
        files = [path if path.is_absolute() else src.parent / path for path in map(Path, names)]
        missing = [name for name, path in zip(names, files, strict=True) if not path.is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise FileNotFoundError(f"{src} lists {len(missing)} images that do not exist: {shown}")
    else:
        raise FileNotFoundError(f"{src} is neither a folder of images nor a file listing images")
    if not files:
        raise ValueError(f"no images in {src} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return files, names


def check_output(path: str | Path) -> Path:
    """``path`` if its suffix is one :func:`write_embeddings` writes, else ValueError."""
    path = Path(path)
    if path.suffix not in OUTPUT_FORMATS:
        raise ValueError(f"--out {path}: choose a file ending in {' or '.join(OUTPUT_FORMATS)}")
    return path


def write_embeddings(path: str | Path, names: list[str], embeddings: np.ndarray) -> Path:
    """Writes names and (N, E) float32 embeddings as ``.npz`` (``embeddings``, ``paths``) or ``.parquet`` (``path``,
    ``embedding`` fixed-size float32 list), by suffix; returns the path.
    """
    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if path.suffix == ".npz":
        np.savez(path, embeddings=embeddings, paths=np.asarray(names, dtype=str))
    else:
        column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1])
        pq.write_table(pa.table({"path": pa.array(names, pa.string()), "embedding": column}), path)
    return path


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Reads :func:`write_embeddings`'s file: (names, (N, E) float32)."""
    path = Path(path)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        embeddings = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        return table.column("path").to_pylist(), embeddings
    with np.load(path, allow_pickle=False) as data:
        return data["paths"].tolist(), data["embeddings"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m facerec.embed", description=__doc__)
    parser.add_argument("model", help="training checkpoint (.ckpt) or ONNX export (.onnx)")
    parser.add_argument("src", help="folder of images, or a text file with one image path per line")
    parser.add_argument("--out", required=True, help="output file: .npz or .parquet")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (not with --detect)")
    parser.add_argument("--no-flip", action="store_true", help="embed the image only, not image + mirror image")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument(
        "--detect", action="store_true", help="raw photos: detect, keep one face per photo, align, then embed"
    )
    parser.add_argument(
        "--min-score", type=float, default=DEFAULT_MIN_SCORE, help="with --detect: minimum score of a kept face"
    )
    parser.add_argument("--report", default=None, help="with --detect: the report JSON (default FILE.detection.json)")
    return parser


def report_path(args: argparse.Namespace) -> Path | None:
    """The detection report's path with ``--detect`` (``--report`` or ``FILE.detection.json``), else None.

    Raises ValueError for ``--report`` or ``--min-score`` without ``--detect``.
    """
    if not args.detect:
        if args.report is not None or args.min_score != DEFAULT_MIN_SCORE:
            raise ValueError("--report and --min-score are options of --detect")
        return None
    return Path(args.report) if args.report else Path(args.out).with_suffix(".detection.json")


def embed_photos(
    model: FaceEmbedder, files: list[Path], names: list[str], min_score: float, batch_size: int
) -> tuple[list[str], np.ndarray, DetectionReport]:
    """Detects, aligns and embeds photo files in chunks: the names and (M, E) embeddings of the photos with a kept
    face, and the detection report of all.
    """
    detector = FaceDetector().to(model.device)
    report = DetectionReport(detector_settings(detector, min_score))
    kept_names, kept = [], []
    start = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task(f"detecting and embedding {len(files)} photos", total=len(files))
        for first in range(0, len(files), DETECT_CHUNK):
            chunk = slice(first, first + DETECT_CHUNK)
            result = model.embed_photos([read_image(f) for f in files[chunk]], detector, min_score, batch_size)
            for name, choice in zip(names[chunk], result.choices, strict=True):
                report.add(name, choice)
            kept_names += [name for name, found in zip(names[chunk], result.found, strict=True) if found]
            kept.append(result.embeddings[result.found])
            progress.advance(task, len(result.choices))
    report.seconds = time.perf_counter() - start
    return kept_names, np.concatenate(kept), report


def main(argv: list[str] | None = None) -> int:
    """Embeds MODEL's (``.ckpt`` or ``.onnx``) embeddings of SRC's images into FILE; returns the exit code.

    Images are prepared as at evaluation (model's crop and input size; image + mirror unless ``--no-flip``).
    FILE is checked before embedding; an existing one is replaced only with ``--overwrite``. Bad input: exit 2
    with a message on stderr.
    """
    args = build_parser().parse_args(argv)
    try:
        report_file = report_path(args)
        check_output_file(check_output(args.out), args.overwrite, "--out", "--overwrite")  # before the embedding
        if report_file is not None:
            check_output_file(report_file, args.overwrite, "--report", "--overwrite")
            check_distinct([("--out", Path(args.out)), ("--report", report_file)])
        files, names = list_images(args.src)
        model = load_model(args.model, flip=False if args.no_flip else None, device=args.device)
        if report_file is None:
            dataset = VerificationImages(files, model.transform)
            raw = embed_dataset(model, dataset, args.batch_size, args.workers, f"embedding {len(files)} images")
            embeddings = l2_normalize(raw)
        else:
            names, embeddings, report = embed_photos(model, files, names, args.min_score, args.batch_size)
            report_file.write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
            print(report.table())
            if not names:
                raise ValueError(f"no face kept in any of the {report.photos} photos: see {report_file}")
            print(f"{report.photos - report.kept} photos without a kept face are left out; see {report_file}")
        path = write_embeddings(args.out, names, embeddings)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}: {len(names)} L2-normalised {embeddings.shape[1]}-d embeddings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
