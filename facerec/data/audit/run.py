"""``python -m facerec.data audit``: an identity folder's duplicates, label errors, identity merges, unreadable or
undetectable images and overlap with a verification set's people, as ``audit.json`` and ``worst.png``.

The embeddings come from ``python -m facerec.embed`` run once over every image (the training set's and the
verification set's) in a child process: the data tools sit below the model layer and do not import it
(README, "Layers"). The embeddings file is kept in the output folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerec.data.audit.findings import (
    Centres,
    exact_duplicates,
    identity_centres,
    identity_merges,
    label_errors,
    near_duplicates,
    overlap,
)
from facerec.data.audit.picture import Case, plot_cases
from facerec.data.decode import CorruptImageError, decode_image
from facerec.data.training.folder import scan_identity_folder
from facerec.data.verification.pairs import read_pairs

log = logging.getLogger(__name__)

REPORT_JSON = "audit.json"
PICTURE = "worst.png"
EMBEDDINGS = "embeddings.npz"
DETECTION_JSON = "detection.json"
MODEL_SUFFIXES = (".ckpt", ".onnx")
SHOWN_PER_KIND = 4
"""Worst cases of each kind drawn in the picture."""


@dataclass(frozen=True)
class Thresholds:
    """When the audit reports a case (cosines of L2-normalised embeddings).

    The defaults were chosen on errors planted in real LFW faces (``python -m benchmarks.audit``, seed 0) for the
    small-data recipe's model; a model's cosines have their own scale, so check them with that benchmark's sweep.

    Attributes:
        near_duplicate: Smallest cosine of two images reported as near-duplicates.
        label_margin: Smallest (cosine to the closest other identity's centre) - (cosine to its own identity's
            centre without it) of an image reported as a probable label error.
        merge: Smallest centre cosine of two identities reported as probably one person.
        overlap: Smallest centre cosine of an identity and a verification person reported as probably one person.
    """

    near_duplicate: float = 0.97
    label_margin: float = 0.5
    merge: float = 0.8
    overlap: float = 0.85


@dataclass(frozen=True)
class Embedder:
    """How ``python -m facerec.embed`` is run: ``model`` (.ckpt or .onnx), raw photos (``detect``), options."""

    model: Path
    detect: bool = False
    device: str | None = None
    batch_size: int = 64
    workers: int = 2


@dataclass(frozen=True)
class VerificationPeople:
    """A verification set's unique images (``files``) and the person of each (``people``, indices into ``names``)."""

    files: list[Path]
    people: np.ndarray
    names: list[str]


def check_inputs(root: Path, out: Path, embedder: Embedder) -> None:
    """Refuses before any work: a missing folder or model, a model of another kind, or an output folder that is not
    new or empty or that lies inside the audited folder.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"identity folder not found: {root}")
    if not embedder.model.is_file():
        raise FileNotFoundError(f"model not found: {embedder.model}")
    if embedder.model.suffix.lower() not in MODEL_SUFFIXES:
        raise ValueError(f"--model {embedder.model}: expected a training checkpoint (.ckpt) or an ONNX export (.onnx)")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file: give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} is not empty: give a new or empty folder (nothing is overwritten)")
    if out.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"--out {out} lies inside the audited folder {root}: write the report elsewhere")


def read_verification_people(pairs: Path, images: Path) -> VerificationPeople:
    """The unique images of an LFW-style ``pairs`` file under ``images``; a person is an image's first folder.

    Raises:
        FileNotFoundError: The pairs file or one of its images is missing (the first ones named).
    """
    protocol = read_pairs(pairs)
    relative = list(dict.fromkeys(protocol.left + protocol.right))
    missing = [path for path in relative if not (images / path).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(relative)} images of {pairs} are missing under {images} (e.g. "
            f"{images / missing[0]}): give their folder with --against-images"
        )
    names = sorted({Path(path).parts[0] for path in relative})
    number = {name: index for index, name in enumerate(names)}
    people = np.array([number[Path(path).parts[0]] for path in relative], dtype=np.int64)
    return VerificationPeople([images / path for path in relative], people, names)


def pixel_digest(path: Path) -> str:
    """SHA-1 of an image's decoded pixels and shape (equal for one photo saved twice, even re-encoded losslessly).

    Raises:
        CorruptImageError: It cannot be decoded.
    """
    image = decode_image(path.read_bytes(), source=str(path))
    return hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()


def embed_files(files: list[Path], embedder: Embedder, out: Path) -> dict[str, np.ndarray]:
    """Embeds ``files`` once with ``python -m facerec.embed`` into ``out/embeddings.npz``; returns path -> (E,) row.

    Its progress and summary go to standard output; its standard error is kept for the message of a failure.

    With ``detect`` a photo without a kept face has no row (``out/detection.json`` says why).

    Raises:
        ValueError: The embedding failed (its message is passed on).
    """
    with tempfile.TemporaryDirectory() as folder:
        listing = Path(folder) / "images.txt"
        listing.write_text("".join(f"{file.resolve()}\n" for file in files), encoding="utf-8")
        command = [sys.executable, "-m", "facerec.embed", str(embedder.model), str(listing)]
        command += ["--out", str(out / EMBEDDINGS)]
        command += ["--batch-size", str(embedder.batch_size), "--workers", str(embedder.workers)]
        command += ["--device", embedder.device] if embedder.device else []
        command += ["--detect", "--report", str(out / DETECTION_JSON)] if embedder.detect else []
        result = subprocess.run(command, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise ValueError(f"embedding with python -m facerec.embed failed: {message[0]}")
    with np.load(out / EMBEDDINGS, allow_pickle=False) as data:
        return dict(zip(data["paths"].tolist(), data["embeddings"], strict=True))


def audit_folder(
    root: str | Path,
    out: str | Path,
    embedder: Embedder,
    thresholds: Thresholds = Thresholds(),
    against: Path | None = None,
    against_images: Path | None = None,
) -> dict[str, Any]:
    """Audits identity folder ``root`` (scanned as in training) and writes ``out/audit.json`` and ``out/worst.png``.

    Args:
        root: One sub-folder per identity.
        out: New or empty output folder, outside ``root``.
        embedder: The model and how it embeds.
        thresholds: When a case is reported.
        against: A verification ``pairs.txt``: report training identities that are its people.
        against_images: Its images' folder (default: the pairs file's folder).

    Returns:
        The report written to ``audit.json``.

    Raises:
        FileNotFoundError, FileExistsError, NotADirectoryError, ValueError: Bad input or output, before the work.
    """
    root, out = Path(root), Path(out)
    check_inputs(root, out, embedder)
    verification = None
    if against is not None:
        verification = read_verification_people(Path(against), Path(against_images or Path(against).parent))
    folder = scan_identity_folder(root)
    out.mkdir(parents=True, exist_ok=True)
    digests, corrupt = {}, []
    for index, path in enumerate(folder.paths):
        try:
            digests[index] = pixel_digest(path)
        except CorruptImageError as error:
            corrupt.append({"path": _relative(path, root), "error": str(error)})
    log.info("%s: %d images read, %d unreadable", root, len(digests), len(corrupt))
    readable = [folder.paths[index] for index in sorted(digests)]
    rows = embed_files(readable + (verification.files if verification else []), embedder, out)
    embedded = [index for index in sorted(digests) if str(folder.paths[index].resolve()) in rows]
    if not embedded:
        raise ValueError(f"no image of {root} could be read and embedded: see {out / DETECTION_JSON}")
    names, labels = folder.class_names, np.asarray(folder.labels, dtype=np.int64)[embedded]
    images = [folder.paths[index] for index in embedded]
    embeddings = np.stack([rows[str(path.resolve())] for path in images]).astype(np.float32)
    centres = identity_centres(embeddings, labels, len(names))
    report: dict[str, Any] = {
        "root": str(root),
        "model": str(embedder.model),
        "images": len(folder.paths),
        "identities": len(names),
        "thresholds": asdict(thresholds),
        "corrupt": corrupt,
        "undetectable": [_relative(path, root) for path in readable if str(path.resolve()) not in rows],
        **_findings(
            [_relative(path, root) for path in images],
            [names[label] for label in labels],
            names,
            embeddings,
            labels,
            centres,
            [digests[index] for index in embedded],
            thresholds,
            _device(embedder),
        ),
    }
    examples: dict[str, list[Path]] = {}
    for path, label in zip(images, labels, strict=True):
        examples.setdefault(names[label], []).append(path)
    if verification is not None:
        report["overlap"] = _overlap_entries(verification, rows, centres, names, examples, thresholds, embedder)
    report["counts"] = {kind: len(report[kind]) for kind in _KINDS if kind in report}
    report["files"] = {"report": REPORT_JSON, "picture": PICTURE, "embeddings": EMBEDDINGS}
    cases = _worst_cases(report, root, examples)
    if cases:
        plot_cases(cases, out / PICTURE, f"audit of {root.name}: the worst {SHOWN_PER_KIND} cases of each kind")
    else:
        report["files"]["picture"] = None
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _findings(
    paths: list[str],
    identities: list[str],
    names: list[str],
    embeddings: np.ndarray,
    labels: np.ndarray,
    centres: Centres,
    digests: list[str],
    thresholds: Thresholds,
    device: str,
) -> dict[str, list[dict[str, Any]]]:
    """The report's duplicates, label errors and merges of the embedded images: their relative ``paths``,
    ``identities`` (names), (N, E) ``embeddings``, (N,) ``labels`` (indices into ``names``), ``centres`` and
    pixel ``digests``.
    """
    exact = exact_duplicates(digests)
    near = near_duplicates(embeddings, thresholds.near_duplicate, exact, device=device)
    errors = label_errors(embeddings, labels, centres, thresholds.label_margin, device=device)
    return {
        "exact_duplicates": [
            {"paths": [paths[i] for i in group], "identities": [identities[i] for i in group]} for group in exact
        ],
        "near_duplicates": [
            {
                "paths": [paths[pair.first], paths[pair.second]],
                "identities": [identities[pair.first], identities[pair.second]],
                "cosine": round(pair.cosine, 4),
            }
            for pair in near
        ],
        "label_errors": [
            {
                "path": paths[error.index],
                "identity": identities[error.index],
                "own_cosine": round(error.own, 4),
                "closest_identity": names[error.other_label],
                "closest_cosine": round(error.other, 4),
            }
            for error in errors
        ],
        "merges": [
            {
                "identities": [names[merge.first], names[merge.second]],
                "images": [int(centres.counts[merge.first]), int(centres.counts[merge.second])],
                "cosine": round(merge.cosine, 4),
            }
            for merge in identity_merges(centres, thresholds.merge, device=device)
        ],
    }


_KINDS = ("corrupt", "undetectable", "exact_duplicates", "near_duplicates", "label_errors", "merges", "overlap")


def summary(report: dict[str, Any]) -> str:
    """A table of the report's counts per kind."""
    lines = [f"{report['root']}: {report['images']} images of {report['identities']} identities", "kind | count"]
    return "\n".join(lines + [f"{kind} | {count}" for kind, count in report["counts"].items()])


def _device(embedder: Embedder) -> str:
    """Where the searches run: ``--device``, else CUDA when available."""
    return embedder.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _caption(path: str) -> str:
    """A relative path on two lines: folder, then file name."""
    return "\n".join(path.rsplit("/", 1))


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _overlap_entries(
    verification: VerificationPeople,
    rows: dict[str, np.ndarray],
    centres: Centres,
    names: list[str],
    examples: dict[str, list[Path]],
    thresholds: Thresholds,
    embedder: Embedder,
) -> list[dict[str, Any]]:
    """``overlap`` entries: training identity, verification person, centre cosine, example images of both."""
    found = [key in rows for key in map(str, (file.resolve() for file in verification.files))]
    files = [file for file, kept in zip(verification.files, found, strict=True) if kept]
    embeddings = np.stack([rows[str(file.resolve())] for file in files]).astype(np.float32)
    people = identity_centres(embeddings, verification.people[found], len(verification.names))
    first_image = {}
    for file, person in zip(files, verification.people[found], strict=True):
        first_image.setdefault(int(person), file)
    return [
        {
            "identity": names[item.label],
            "person": verification.names[item.person],
            "cosine": round(item.cosine, 4),
            "identity_image": str(examples[names[item.label]][0]),
            "person_image": str(first_image[item.person]),
        }
        for item in overlap(centres, people, thresholds.overlap, device=_device(embedder))
    ]


def _worst_cases(report: dict[str, Any], root: Path, examples: dict[str, list[Path]]) -> list[Case]:
    """The picture's rows: the first :data:`SHOWN_PER_KIND` cases of each kind (the report lists the worst first).

    ``examples``: each identity's embedded images, to show an identity by its first one.
    """
    cases = []
    for group in report["exact_duplicates"][:SHOWN_PER_KIND]:
        cases.append(Case("exact duplicate", [(root / path, _caption(path)) for path in group["paths"]]))
    for pair in report["near_duplicates"][:SHOWN_PER_KIND]:
        cases.append(
            Case(f"near duplicate\ncosine {pair['cosine']:.3f}", [(root / p, _caption(p)) for p in pair["paths"]])
        )
    for error in report["label_errors"][:SHOWN_PER_KIND]:
        title = f"label error?\nown {error['own_cosine']:.3f}\nclosest {error['closest_cosine']:.3f}"
        own = next(path for path in examples[error["identity"]] if path != root / error["path"])
        shown = [(root / error["path"], _caption(error["path"])), (own, f"own:\n{error['identity']}")]
        shown.append((examples[error["closest_identity"]][0], f"closest:\n{error['closest_identity']}"))
        cases.append(Case(title, shown))
    for merge in report["merges"][:SHOWN_PER_KIND]:
        shown = [(examples[name][0], name) for name in merge["identities"]]
        cases.append(Case(f"one person?\ncosine {merge['cosine']:.3f}", shown))
    for item in report.get("overlap", [])[:SHOWN_PER_KIND]:
        shown = [(Path(item["identity_image"]), item["identity"]), (Path(item["person_image"]), item["person"])]
        cases.append(Case(f"in verification?\ncosine {item['cosine']:.3f}", shown))
    for path in report["undetectable"][:SHOWN_PER_KIND]:
        cases.append(Case("no face found", [(root / path, _caption(path))]))
    return cases
