"""``python -m facerec.data``: dataset tools (check, folder2rec, rec2folder, make-pairs, make-search, align, audit)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from facerec.data import align, tools
from facerec.data.audit import run as audit_run
from facerec.data.detection.choice import DEFAULT_MIN_SCORE
from facerec.data.detection.folder import REPORT_JSON, align_photo_folder
from facerec.data.detection.mtcnn import FaceDetector

ALIGN_DETECT_DEFAULTS = {
    "overwrite": False,
    "min_score": DEFAULT_MIN_SCORE,
    "min_face_size": 20.0,
    "batch_size": 16,
    "device": None,
}
"""Defaults of ``align``'s ``--detect`` options (given with ``--landmarks`` they are refused)."""


def _check(args: argparse.Namespace) -> int:
    report = tools.check(args.dir)
    print(report.format())
    return 1 if report.corrupt else 0


def _folder2rec(args: argparse.Namespace) -> int:
    images, identities = tools.folder_to_rec(args.src, args.dst)
    print(f"wrote {args.dst}/train.rec and train.idx: {images} images, {identities} identities")
    return 0


def _rec2folder(args: argparse.Namespace) -> int:
    images, identities = tools.rec_to_folder(args.src, args.dst)
    print(f"wrote {args.dst}: {images} images in {identities} identity folders")
    return 0


def _make_pairs(args: argparse.Namespace) -> int:
    tools.make_pairs(args.dir, args.out, args.folds, args.pairs_per_fold, args.seed)
    count = args.pairs_per_fold
    print(f"wrote {args.out}: {args.folds} folds of {count} same + {count} different pairs")
    return 0


def _align(args: argparse.Namespace) -> int:
    height, width = args.size
    if args.landmarks is None:
        detector = FaceDetector(min_face_size=args.min_face_size).to(args.device or "cpu")
        report = align_photo_folder(
            args.src, args.dst, detector, tuple(args.size), args.min_score, args.overwrite, args.batch_size
        )
        print(report.table())
        print(
            f"wrote {report.kept} aligned {height}x{width} crops under {args.dst}; the {len(report.problems)} "
            f"photos with no face, several faces, only low scores or an unreadable file: {args.dst}/{REPORT_JSON}"
        )
        return 0
    for option in ("overwrite", "min_score", "min_face_size", "batch_size", "device"):
        if getattr(args, option) != ALIGN_DETECT_DEFAULTS[option]:
            raise ValueError(f"--{option.replace('_', '-')} is an option of --detect, not of --landmarks")
    count = align.align_folder(args.src, args.dst, args.landmarks, tuple(args.size))
    print(f"wrote {count} aligned {height}x{width} crops under {args.dst}")
    return 0


def _make_search(args: argparse.Namespace) -> int:
    gallery, probe, unenrolled = tools.make_search(args.dir, args.out, args.gallery_images, args.unenrolled, args.seed)
    print(
        f"wrote {args.out}/gallery ({gallery} images) and {args.out}/probe ({probe} images, {unenrolled} "
        "identities not in the gallery)"
    )
    return 0


def _audit(args: argparse.Namespace) -> int:
    if args.against_images is not None and args.against is None:
        raise ValueError("--against-images is an option of --against")
    embedder = audit_run.Embedder(Path(args.model), args.detect, args.device, args.batch_size, args.workers)
    thresholds = audit_run.Thresholds(args.near_duplicate, args.label_margin, args.merge, args.overlap)
    report = audit_run.audit_folder(args.dir, args.out, embedder, thresholds, args.against, args.against_images)
    print(audit_run.summary(report))
    picture = f" and {args.out}/{audit_run.PICTURE}" if report["files"]["picture"] else ""
    print(f"wrote {args.out}/{audit_run.REPORT_JSON}{picture}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; each sub-command stores its handler in ``run``."""
    parser = argparse.ArgumentParser(prog="python -m facerec.data", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="scan an identity folder or a folder with train.rec")
    check.add_argument("dir")
    check.set_defaults(run=_check)
    to_rec = commands.add_parser("folder2rec", help="identity folder -> insightface DST/train.rec + train.idx")
    to_rec.add_argument("src")
    to_rec.add_argument("dst")
    to_rec.set_defaults(run=_folder2rec)
    to_folder = commands.add_parser("rec2folder", help="SRC/train.rec -> identity folder DST/CLASS/KEY.jpg")
    to_folder.add_argument("src")
    to_folder.add_argument("dst")
    to_folder.set_defaults(run=_rec2folder)
    pairs = commands.add_parser("make-pairs", help="balanced LFW-style pairs.txt from held-out identities")
    pairs.add_argument("dir", help="identity folder with LFW names NAME/NAME_%%04d.jpg")
    pairs.add_argument("out", help="pairs.txt to write")
    pairs.add_argument("--folds", type=int, default=10)
    pairs.add_argument("--pairs-per-fold", type=int, default=300)
    pairs.add_argument("--seed", type=int, default=0)
    pairs.set_defaults(run=_make_pairs)
    aligner = commands.add_parser("align", help="5-landmark ArcFace alignment: SRC/PATH -> DST/PATH crops")
    aligner.add_argument("src", help="the photos (with --detect: every image at any depth)")
    aligner.add_argument("dst", help="output folder (same relative paths)")
    source = aligner.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--landmarks", metavar="FILE", help="lines 'PATH x1 y1 ... x5 y5 [score]' (IJB's format), PATH relative to SRC"
    )
    source.add_argument(
        "--detect", action="store_true", help="find the faces (MTCNN), keep the largest x most central one per photo"
    )
    aligner.add_argument("--size", type=int, nargs=2, default=[112, 112], metavar=("H", "W"), help="crop size")
    detection = aligner.add_argument_group("--detect options")
    detection.add_argument(
        "--min-score",
        type=float,
        default=ALIGN_DETECT_DEFAULTS["min_score"],
        help="minimum face probability of a kept face (default %(default)s)",
    )
    detection.add_argument(
        "--min-face-size",
        type=float,
        default=ALIGN_DETECT_DEFAULTS["min_face_size"],
        help="smallest face side searched for, in pixels (default %(default)s)",
    )
    detection.add_argument(
        "--batch-size",
        type=int,
        default=ALIGN_DETECT_DEFAULTS["batch_size"],
        help="photos per detector pass (default %(default)s)",
    )
    detection.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    detection.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")
    aligner.set_defaults(run=_align)
    search = commands.add_parser("make-search", help="identity folder -> 1:N search set OUT/gallery + OUT/probe")
    search.add_argument("dir", help="identity folder (held-out identities)")
    search.add_argument("out", help="new folder for gallery/ and probe/")
    search.add_argument("--gallery-images", type=int, default=1, help="images each enrolled identity puts in gallery")
    search.add_argument("--unenrolled", type=float, default=0.25, help="fraction of identities left out of gallery")
    search.add_argument("--seed", type=int, default=0)
    search.set_defaults(run=_make_search)
    audit = commands.add_parser(
        "audit", help="duplicates, label errors, identity merges, unreadable images, overlap with a verification set"
    )
    audit.add_argument("dir", help="identity folder")
    audit.add_argument("--model", required=True, help="training checkpoint (.ckpt) or ONNX export (.onnx)")
    audit.add_argument("--out", required=True, help="new or empty folder for audit.json, worst.png, embeddings.npz")
    audit.add_argument(
        "--against", type=Path, metavar="PAIRS", help="a verification pairs.txt: overlap with its people"
    )
    audit.add_argument("--against-images", type=Path, metavar="DIR", help="its images (default: the file's folder)")
    audit.add_argument("--detect", action="store_true", help="raw photos: detect and align each face (MTCNN) first")
    audit.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    audit.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    audit.add_argument("--workers", type=int, default=2, help="image decoding processes (not with --detect)")
    defaults = audit_run.Thresholds()
    limits = audit.add_argument_group("thresholds (cosines of L2-normalised embeddings)")
    limits.add_argument("--near-duplicate", type=float, default=defaults.near_duplicate, help="default %(default)s")
    limits.add_argument(
        "--label-margin",
        type=float,
        default=defaults.label_margin,
        help="closest other identity minus own identity (default %(default)s)",
    )
    limits.add_argument(
        "--merge", type=float, default=defaults.merge, help="two identities' centres (default %(default)s)"
    )
    limits.add_argument(
        "--overlap", type=float, default=defaults.overlap, help="identity and verification person (default %(default)s)"
    )
    audit.set_defaults(run=_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit code (2 with a message on stderr for bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return args.run(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
