"""1:N search of real faces never seen in training, by the models the learning benchmark trained.

``python -m benchmarks.learning`` trains every head on the people of LFW View-2 folds 1–3 and verifies
pairs of folds 4–5. This benchmark asks the other question a deployment asks: given a gallery with ONE
enrolled photo per person, who is this new photo? It searches the people of folds 4–5 (never trained
on; LFW's folds share no one) with each run's ``checkpoints/last.ckpt``.

Protocol (the search set, built in memory from ``../shared/data/lfw_folds1-5``; no file is copied):

- the people of folds 4–5 are those named in those folds' lines of ``pairs.txt``
  (:func:`benchmarks.learning.fold_people`): 845 people;
- of those with at least 2 images (303), a seeded random ``--unenrolled`` fraction (25 %: 76 people)
  is left out of the gallery: all their images are non-mated probes;
- every other one (227) enrols 1 random image in the gallery (its identity template); the rest of
  their images are mated probes;
- the people with a single image (542) are MegaFace-style distractors: extra gallery entries that
  belong to no probe, so they can only be wrong answers.

The counts of a run are printed and written to the outputs. Each model embeds every image (with its
own input size, crop and flip TTA, as at evaluation); the search and its metrics are
:mod:`facerec.eval.search`'s: cosine similarity, pessimistic ranks (an exact tie with a wrong entry is a
miss), ``rank-1`` and ``rank-5`` (closed-set CMC over the mated probes) and DIR at FPIR 1e-2 and 1e-1
(open set: the top-1 answer must be right AND score above the threshold that lets at most that fraction
of non-mated probes through). Each head is reported as mean ± population std (as the learning
benchmark) over its seeds, beside the LFW verification accuracy the learning benchmark recorded for the
same runs. Raw pixels and eigenfaces (PCA of the training people's images: folds 1–3, at least 2 images
each; plain and whitened), at the models' image size and crop, are the baselines, searched the same way.

Usage::

    python -m benchmarks.search --runs logs/benchmarks/learning/<time>   # a learning benchmark's output
    python -m benchmarks.search                                          # its latest one under logs/
    python -m benchmarks.search --seed 1 --unenrolled 0.5 --out DIR

The table is printed and written to ``<out>/search.md`` and ``<out>/search.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.learning import DEFAULT_LFW, EIGENFACES, HEADS, REPO, Run, cell, fold_people
from facerec.data.decode import read_image
from facerec.data.pixels import pixel_rows
from facerec.data.training.folder import list_image_files
from facerec.data.verification.sets import VerificationImages
from facerec.eval.baseline import eigenface_features, fit_pca, raw_pixel_features
from facerec.eval.search import FPIR_TARGETS, RANKS, fpir_key, identification_metrics, search_identities
from facerec.inference import embed_dataset, load_model

LEARNING_OUTPUTS = REPO / "logs" / "benchmarks" / "learning"
METRICS = (*(f"rank-{rank}" for rank in RANKS), *(fpir_key(target) for target in FPIR_TARGETS))
TRAIN_FOLDS, SEARCH_FOLDS = (0, 1, 2), (3, 4)
MAX_PROBES = 10


@dataclass
class SearchSplit:
    """A 1:N search set as image lists; integer labels index ``people`` (the people with >= 2 images)."""

    people: list[str]
    gallery: list[Path]
    gallery_labels: list[int]
    probes: list[Path]
    probe_labels: list[int]
    distractors: list[Path]
    unenrolled: list[str]

    @property
    def images(self) -> list[Path]:
        """Every image of the set, in the order gallery, probes, distractors."""
        return self.gallery + self.probes + self.distractors

    def parts(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of ``features`` (one per :attr:`images`) split into gallery, probe and distractor rows."""
        g, p = len(self.gallery), len(self.probes)
        return features[:g], features[g : g + p], features[g + p :]

    def counts(self) -> dict[str, int]:
        """How many people and images each part holds."""
        enrolled = set(self.gallery_labels)
        return {
            "people": len(self.people) + len(self.distractors),
            "gallery identities": len(self.gallery),
            "distractors": len(self.distractors),
            "unenrolled people": len(self.unenrolled),
            "mated probes": sum(label in enrolled for label in self.probe_labels),
            "non-mated probes": sum(label not in enrolled for label in self.probe_labels),
        }


def search_split(
    lfw: Path,
    folds: tuple[int, ...] = SEARCH_FOLDS,
    unenrolled: float = 0.25,
    seed: int = 0,
    max_probes: int | None = MAX_PROBES,
) -> SearchSplit:
    """The search set of the people of ``folds`` (0-based) of ``lfw/pairs.txt``, images under ``lfw/images/<Name>``.

    People are taken in sorted order and files in sorted order, so a seed always gives the same split:
    ``round(unenrolled * people with >= 2 images)`` of them, drawn with ``random.Random(seed)``, are left
    out of the gallery; then each other one, in order, enrols one image drawn with the same generator.
    People with one image are the distractors. With ``max_probes``, a person with more probe images keeps that
    many, drawn with the same generator (so that a few people with hundreds of photos do not outweigh the rest).

    Raises:
        ValueError: If ``unenrolled`` is not in [0, 1) or no one can be enrolled.
    """
    if not 0 <= unenrolled < 1:
        raise ValueError(f"unenrolled must lie in [0, 1), got {unenrolled}")
    files = {name: list_image_files(lfw / "images" / name) for name in sorted(fold_people(lfw / "pairs.txt", folds))}
    people = [name for name, images in files.items() if len(images) >= 2]
    rng = random.Random(seed)
    left_out = set(rng.sample(people, round(unenrolled * len(people))))
    if len(left_out) == len(people):
        raise ValueError(f"{lfw}: no one to enrol among {len(people)} people with >= 2 images")
    split = SearchSplit(people, [], [], [], [], [], sorted(left_out))
    for label, name in enumerate(people):
        chosen = None if name in left_out else rng.randrange(len(files[name]))
        probes = [path for i, path in enumerate(files[name]) if i != chosen]
        if max_probes is not None and len(probes) > max_probes:
            probes = sorted(rng.sample(probes, max_probes))
        if chosen is not None:
            split.gallery.append(files[name][chosen])
            split.gallery_labels.append(label)
        split.probes += probes
        split.probe_labels += [label] * len(probes)
    split.distractors = [images[0] for images in files.values() if len(images) == 1]
    return split


def training_images(lfw: Path, folds: tuple[int, ...] = TRAIN_FOLDS) -> list[Path]:
    """The images the learning benchmark trains on: people of ``folds`` with at least 2 images."""
    people = (list_image_files(lfw / "images" / name) for name in sorted(fold_people(lfw / "pairs.txt", folds)))
    return [path for images in people if len(images) >= 2 for path in images]


def search_metrics(features: np.ndarray, split: SearchSplit) -> dict[str, float]:
    """``rank-1``, ``rank-5``, ``dir@fpir=1e-2``, ``dir@fpir=1e-1`` of the search set embedded as ``features``.

    Args:
        features: (N, E) one row per image of ``split.images``; need not be normalised.
        split: The search set.
    """
    gallery, probes, distractors = split.parts(features)
    result = search_identities(gallery, np.array(split.gallery_labels), probes, split.probe_labels, distractors)
    counts = split.counts()
    assert (result.n_mated, result.n_non_mated) == (counts["mated probes"], counts["non-mated probes"])
    return identification_metrics(result)


def find_runs(runs_dir: Path) -> list[tuple[str, int, Path]]:
    """``(head, seed, run folder)`` of every ``runs/<head>_seed<k>`` folder, heads in the learning benchmark's order."""
    found = []
    for folder in sorted((runs_dir / "runs").iterdir()) if (runs_dir / "runs").is_dir() else []:
        match = re.fullmatch(r"(.+)_seed(\d+)", folder.name)
        if match and folder.is_dir():
            found.append((match[1], int(match[2]), folder))
    order = {head: k for k, head in enumerate(HEADS)}
    return sorted(found, key=lambda run: (order.get(run[0], len(order)), run[0], run[1]))


def latest_learning_output() -> Path | None:
    """The learning benchmark's most recent output under ``logs/benchmarks/learning`` (its default ``--out``)."""
    outputs = [path for path in LEARNING_OUTPUTS.glob("*") if (path / "runs").is_dir()]
    return max(outputs, key=lambda path: (path / "runs").stat().st_mtime, default=None)


def verification_accuracy(run_dir: Path) -> float:
    """The LFW folds 4–5 verification accuracy the learning benchmark recorded for a run (NaN if none)."""
    record = run_dir / "benchmark.json"
    if not record.is_file():
        return float("nan")
    return float(json.loads(record.read_text()).get("metrics", {}).get("accuracy", float("nan")))


def evaluate_run(run: Run, run_dir: Path, split: SearchSplit, images: list[np.ndarray], batch_size: int) -> dict:
    """Embeds the search set with ``run_dir/checkpoints/last.ckpt`` and fills in ``run``; returns its input format."""
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    try:
        model = load_model(checkpoint)
        features = embed_dataset(model, VerificationImages(images, model.transform), batch_size=batch_size)
        run.metrics = search_metrics(features, split) | {"verification accuracy": verification_accuracy(run_dir)}
    except Exception as error:  # one unreadable run must not hide the others
        run.error = f"{checkpoint}: {type(error).__name__}: {error}"
        return {}
    finally:
        run.seconds = time.perf_counter() - start
    return {"input_size": list(model.input_size), "crop": model.crop}


def summarise(runs: list[Run]) -> dict[str, float | str]:
    """Mean and population std (as the learning benchmark) of each metric over the successful runs of one head.

    A metric's NaN values (no verification accuracy recorded, no non-mated probe) are left out; NaN if all are.
    """
    good = [run for run in runs if run.error is None]
    row: dict[str, float | str] = {"seeds": ",".join(str(run.seed) for run in good)}
    for key in (*METRICS, "verification accuracy"):
        values = np.array([run.metrics[key] for run in good], dtype=float)
        values = values[np.isfinite(values)]
        row[key] = float(values.mean()) if len(values) else float("nan")
        row[f"{key}_std"] = float(values.std()) if len(values) > 1 else float("nan")
    row["seconds"] = float(np.mean([run.seconds for run in good])) if good else float("nan")
    return row


def table(rows: dict[str, dict], title: str) -> tuple[Table, str]:
    """The results as a rich table (printed) and as Markdown (written)."""
    columns = ["method", "seeds", "rank-1", "rank-5", "DIR@FPIR=1e-2", "DIR@FPIR=1e-1", "LFW verif. acc", "s/run"]
    rich_table = Table(*columns, title=title)
    markdown = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for name, row in rows.items():
        cells = [name, str(row.get("seeds", "-")), *(cell(row, key) for key in METRICS)]
        accuracy = row.get("verification accuracy", float("nan"))
        cells.append("-" if accuracy != accuracy else cell(row, "verification accuracy"))
        cells.append(f"{row['seconds']:.1f}")
        rich_table.add_row(*cells)
        markdown.append("| " + " | ".join(cells) + " |")
    return rich_table, "\n".join(markdown)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns non-zero if a run could not be evaluated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=Path, default=None,
        help="a learning benchmark's output folder, holding runs/<head>_seed<k>/checkpoints/last.ckpt "
        f"(default: the latest under {LEARNING_OUTPUTS.relative_to(REPO)})",
    )  # fmt: skip
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW, help="folder with images/ and pairs.txt")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: logs/benchmarks/search/<time>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the gallery / probe split")
    parser.add_argument("--unenrolled", type=float, default=0.25, help="fraction of people left out of the gallery")
    parser.add_argument(
        "--max-probes", type=int, default=MAX_PROBES, help="probe images kept per person (0: all of them)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    args = parser.parse_args(argv)
    if not (args.lfw / "pairs.txt").is_file() or not (args.lfw / "images").is_dir():
        parser.error(f"{args.lfw} needs images/ and pairs.txt (the shared LFW folds: ../shared/data/lfw_folds1-5)")
    runs_dir = args.runs or latest_learning_output()
    if runs_dir is None:
        parser.error(f"no learning benchmark output under {LEARNING_OUTPUTS}: give --runs DIR")
    found = [run for run in find_runs(runs_dir) if (run[2] / "checkpoints" / "last.ckpt").is_file()]
    if not found:
        parser.error(f"{runs_dir}: no runs/<head>_seed<k>/checkpoints/last.ckpt")
    if not 0 <= args.unenrolled < 1:
        parser.error(f"--unenrolled must lie in [0, 1), got {args.unenrolled}")
    out = (args.out or REPO / "logs" / "benchmarks" / "search" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    split = search_split(args.lfw, SEARCH_FOLDS, args.unenrolled, args.seed, args.max_probes or None)
    counts = split.counts()
    trained = {path.parent.name for path in training_images(args.lfw)}
    overlap = trained & ({path.parent.name for path in split.images})
    print(
        "search set (people of folds 4-5): " + ", ".join(f"{value} {key}" for key, value in counts.items())
        + f"; people also trained on: {len(overlap)}",
        flush=True,
    )  # fmt: skip
    images = [read_image(path) for path in split.images]  # decoded once, embedded by every model

    runs: dict[str, list[Run]] = {}
    inputs = {}
    for head, seed, run_dir in found:
        run = Run(head, seed)
        inputs[run_dir.name] = evaluate_run(run, run_dir, split, images, args.batch_size)
        shown = {key: round(value, 4) for key, value in run.metrics.items()}
        print(f"{head} seed {seed}: {shown or run.error} ({run.seconds:.1f} s)", flush=True)
        runs.setdefault(head, []).append(run)

    # The baselines see the images as the models do (the first model's input size and crop).
    model_input = next((value for value in inputs.values() if value), {"input_size": [64, 64], "crop": None})
    size, crop = tuple(model_input["input_size"]), model_input["crop"]
    training = training_images(args.lfw)
    began = time.perf_counter()
    pca = fit_pca(pixel_rows(training, size, crop), EIGENFACES)  # fit once, for both eigenface rows
    fitting = time.perf_counter() - began
    baselines = {
        "raw pixels": lambda: raw_pixel_features(pixel_rows(images, size, crop)),
        f"eigenfaces (PCA-{EIGENFACES})": lambda: eigenface_features(pixel_rows(images, size, crop), pca),
        f"eigenfaces, whitened (PCA-{EIGENFACES})": lambda: eigenface_features(
            pixel_rows(images, size, crop), pca, whiten=True
        ),
    }
    baseline_rows = {}
    for name, features in baselines.items():
        began = time.perf_counter()
        metrics = search_metrics(features(), split)
        seconds = time.perf_counter() - began + (fitting if name.startswith("eigenfaces") else 0.0)
        baseline_rows[name] = metrics | {"seeds": "-", "seconds": seconds}
        print(f"{name}: { {key: round(value, 4) for key, value in metrics.items()} }", flush=True)

    summaries = {head: summarise(head_runs) for head, head_runs in runs.items()}
    ranked = sorted(summaries, key=lambda head: (-len(runs[head]), -summaries[head]["rank-1"]))
    record = runs_dir / "learning.json"
    learning_table = json.loads(record.read_text()).get("table", {}) if record.is_file() else {}
    for name, row in baseline_rows.items():  # the same baselines' verification accuracy, if the learning run has it
        row["verification accuracy"] = learning_table.get(name, {}).get("accuracy", float("nan"))
    rows = {head: summaries[head] for head in ranked} | baseline_rows
    title = (
        f"1:N search, LFW folds 4-5 people (never trained on): {counts['gallery identities']} enrolled + "
        f"{counts['distractors']} distractors; {counts['mated probes']} mated, {counts['non-mated probes']} "
        f"non-mated probes (seed {args.seed})"
    )
    rich_table, markdown = table(rows, title)
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(rich_table)  # a log keeps the table unwrapped
    failed = [run for head_runs in runs.values() for run in head_runs if run.error]
    for run in failed:
        print(f"FAILED {run.head} seed {run.seed}: {run.error}", file=sys.stderr)
    seconds = time.perf_counter() - start
    print(f"{len(found)} checkpoints and 3 baselines in {seconds / 60:.1f} min")
    (out / "search.md").write_text(f"{title}\n\n{markdown}\n")
    protocol = {
        "lfw": str(args.lfw), "runs": str(runs_dir), "seed": args.seed, "unenrolled": args.unenrolled,
        "max_probes": args.max_probes,
        "counts": counts, "people also trained on": len(overlap),
        "baseline input": {"input_size": list(size), "crop": crop, "pca_training_images": len(training)},
        "unenrolled people": split.unenrolled,
        "gallery images": [str(path.relative_to(args.lfw)) for path in split.gallery],
        "seconds": seconds,
    }  # fmt: skip
    (out / "search.json").write_text(
        json.dumps(
            {
                "protocol": protocol,
                "table": rows,
                "runs": {head: [vars(run) for run in head_runs] for head, head_runs in runs.items()},
                "inputs": inputs,
            },
            indent=2,
        )
    )
    print(f"written to {out / 'search.md'} and {out / 'search.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
