"""What ``experiment=small_data`` learns from real faces: every head on a development protocol of real LFW people.

Protocol (open set: no person is both trained on and verified):

- train on the people of LFW View-2 folds 1–3 (``data.min_images_per_identity=2``: those with at least
  two images; 471 people, 2,551 images in ``../shared/data/lfw_folds1-5``);
- verify on the 1,200 official pairs of folds 4–5 with the 10-fold protocol. The pairs are regrouped
  into 10 folds of 60 same + 60 different pairs (in file order) so that every fold is balanced, as
  in the full LFW protocol; the two official folds alone would give the 10-fold split folds of
  only same or only different pairs.

Every head (``--heads``) is trained once with the first seed; the ``--top`` best by accuracy and the
recipe's own head are then trained with the other ``--seeds``, and reported as mean ± std over all
their seeds. Raw pixels and eigenfaces (PCA fit on the training images, plain and whitened), measured
on the same pairs with the recipe's image size and crop, are the baselines. Every run is the real entry point,
``python train.py experiment=small_data head=<head> seed=<seed> ...``, and its wall time (data loading
and evaluation included) is reported.

Usage::

    python -m benchmarks.learning                        # 14-16 runs, 90-100 minutes on 2 CPU cores
    python -m benchmarks.learning --quick                # the recipe's head, one seed: checks the script
    python -m benchmarks.learning --heads cosface,softmax --seeds 0,1 --top 1
    python -m benchmarks.learning --quick trainer.max_epochs=2   # extra train.py overrides
    python -m benchmarks.learning --out DIR              # continues an interrupted benchmark in DIR
    python -m benchmarks.learning --images ALIGNED --fallback LFW/frames   # other crops of the same photos

``--images DIR`` trains and verifies on another folder of the same relative paths, such as the output of
``python -m facerec.data align LFW/frames DIR --detect``. A training photo missing there (no face kept) is
left out of training and counted. A verification photo missing there is an error unless ``--fallback`` names
a folder of the same paths to take it from: the raw frames give what ``data.val_sets.NAME.detect=true`` does
with a photo without a face (it is embedded whole). Either way every pair is verified, and the substituted
photos and their pairs are counted; so is ``DIR/detection_report.json``'s summary when it is there.

The table is printed and written to ``<out>/learning.md`` and ``<out>/learning.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table

from facerec.data.pixels import pixel_rows
from facerec.data.training.folder import scan_identity_folder
from facerec.data.verification.pairs import read_pairs
from facerec.data.verification.sets import load_pairs_set
from facerec.eval.baseline import eigenface_metrics, raw_pixel_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LFW = REPO.parent / "shared" / "data" / "lfw_folds1-5"
FIRST_HEADS = ("softmax", "center", "cosface", "arcface", "arcface_center", "combined", "subcenter_arcface", "adaface")
HEADS = (*FIRST_HEADS, *sorted({p.stem for p in (REPO / "conf" / "head").glob("*.yaml")} - set(FIRST_HEADS)))
"""Every ``conf/head``: the first eight in the order the tables have always shown them, then the others by name."""
METRICS = ("accuracy", "auc", "tar@far=1e-3")
TRAIN_FOLDS, TEST_FOLDS = (0, 1, 2), (3, 4)
"""The development protocol's folds (0-based): people trained on, pairs verified."""
EIGENFACES = 100


@dataclass
class Run:
    """One training run of the benchmark."""

    head: str
    seed: int
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def pair_folds(pairs_file: Path) -> tuple[int, int]:
    """``(folds, n)`` from a ``folds<TAB>n`` pairs-file header."""
    header = pairs_file.read_text().split("\n", 1)[0].split()
    if len(header) != 2:
        raise ValueError(f"{pairs_file}: expected a 'folds<TAB>n' header, got {' '.join(header)!r}")
    return int(header[0]), int(header[1])


def fold_people(pairs_file: Path, folds: Iterable[int]) -> set[str]:
    """Names of the people in the lines of ``folds`` (0-based) of an LFW ``pairs.txt`` (``folds<TAB>n`` header)."""
    _, n = pair_folds(pairs_file)
    protocol, block = read_pairs(pairs_file), 2 * n
    return {
        path.split("/")[0]
        for k in folds
        for path in protocol.left[k * block : (k + 1) * block] + protocol.right[k * block : (k + 1) * block]
    }


def make_dev_split(
    lfw: Path,
    work: Path,
    train_folds: tuple[int, ...] = TRAIN_FOLDS,
    test_folds: tuple[int, ...] = TEST_FOLDS,
    images: Path | None = None,
) -> tuple[Path, Path]:
    """Writes the development protocol under ``work``.

    Args:
        lfw: A folder with ``images/<Name>/<Name>_NNNN.jpg`` and an LFW ``pairs.txt``.
        work: Output folder.
        train_folds: Folds (0-based) whose people are trained on.
        test_folds: Folds whose pairs are verified.
        images: The images to train on, laid out as ``lfw/images`` (its default); a person without a folder
            there (no photo of theirs kept) is not linked.

    Returns:
        ``(train_root, pairs_file)``: ``train_root/<Name>`` links to the images of every person of
        ``train_folds``; ``pairs_file`` holds the pairs of ``test_folds`` in 10 balanced folds.

    Raises:
        ValueError: If the test pairs cannot be split into 10 balanced folds.
    """
    pairs_path = lfw / "pairs.txt"
    folds, n = pair_folds(pairs_path)
    lines = [line for line in pairs_path.read_text().splitlines()[1:] if line.strip()]
    block = 2 * n
    train_people = fold_people(pairs_path, train_folds)
    same = [line for k in test_folds for line in lines[k * block : k * block + n]]
    different = [line for k in test_folds for line in lines[k * block + n : (k + 1) * block]]
    if len(same) % 10 or max(train_folds + test_folds) >= folds:
        raise ValueError(f"{pairs_path}: folds {test_folds} cannot be regrouped into 10 balanced folds")
    per_fold = len(same) // 10
    regrouped = [f"10\t{per_fold}"]
    for k in range(10):
        regrouped += same[k * per_fold : (k + 1) * per_fold] + different[k * per_fold : (k + 1) * per_fold]
    images = lfw / "images" if images is None else images
    train_root = work / "train"
    train_root.mkdir(parents=True, exist_ok=True)
    for person in sorted(train_people):
        link = train_root / person
        if not link.exists() and (images / person).is_dir():
            link.symlink_to((images / person).resolve(), target_is_directory=True)
    dev_pairs = work / "pairs_dev.txt"
    dev_pairs.write_text("\n".join(regrouped) + "\n")
    return train_root, dev_pairs


def verification_root(pairs: Path, images: Path, work: Path, fallback: Path | None = None) -> tuple[Path, list[str]]:
    """The folder the pairs are verified on: ``images``, or ``work/verify`` when photos are missing there.

    Args:
        pairs: The pairs file.
        images: Root of the pairs' relative image paths.
        work: Output folder.
        fallback: A folder of the same relative paths that a photo missing under ``images`` is taken from.

    Returns:
        ``(root, substituted)``: ``images`` and ``[]`` when every photo is there; otherwise ``work/verify``,
        whose ``<Name>/<file>`` link to ``images`` or, for the ``substituted`` paths, to ``fallback``.

    Raises:
        FileNotFoundError: Photos are missing under ``images`` and ``fallback`` is ``None`` or lacks them.
    """
    protocol = read_pairs(pairs)
    paths = list(dict.fromkeys(protocol.left + protocol.right))
    missing = [path for path in paths if not (images / path).is_file()]
    if not missing:
        return images, []
    lacking = [path for path in missing if fallback is None or not (fallback / path).is_file()]
    if lacking:
        affected = sum(affected_pairs(pairs, lacking).values())
        raise FileNotFoundError(
            f"{len(lacking)} photos of {affected} pairs of {pairs} are missing under {images} "
            f"{'' if fallback is None else f'and {fallback} '}(e.g. {', '.join(lacking[:3])}); "
            "name a folder of the same photos with --fallback (e.g. the raw frames, embedded whole)"
        )
    root, absent = work / "verify", set(missing)
    shutil.rmtree(root, ignore_errors=True)
    for path in paths:
        link = root / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(((fallback if path in absent else images) / path).resolve())
    return root, missing


def affected_pairs(pairs: Path, photos: Iterable[str]) -> dict[str, int]:
    """How many same and different pairs of ``pairs`` use one of ``photos``."""
    protocol, photos = read_pairs(pairs), set(photos)
    used = [
        same
        for left, right, same in zip(protocol.left, protocol.right, protocol.issame, strict=True)
        if left in photos or right in photos
    ]
    return {"same": sum(used), "different": len(used) - sum(used)}


def missing_photos(reference: Path, images: Path, people: Iterable[str]) -> list[str]:
    """The photos of ``people`` under ``reference`` (``<Name>/<file>``) that ``images`` lacks."""
    return [
        f"{person}/{photo.name}"
        for person in sorted(people)
        for photo in sorted((reference / person).glob("*"))
        if photo.is_file() and not (images / person / photo.name).is_file()
    ]


def recipe_config(overrides: list[str]):
    """The composed ``experiment=small_data`` training config."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        overrides = ["experiment=small_data", "data.root=unused", *overrides]
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def train(run: Run, train_root: Path, pairs: Path, images: Path, out: Path, overrides: list[str]) -> Run:
    """Runs ``train.py experiment=small_data`` for one head and seed; fills in metrics, time or the error.

    A finished run of the same command in ``out`` (recorded in its ``benchmark.json``) is reused, so an
    interrupted benchmark continues where it stopped; an unfinished one is deleted and run again.
    """
    run_dir = out / "runs" / f"{run.head}_seed{run.seed}"
    command = [
        sys.executable, "train.py", "experiment=small_data", f"head={run.head}",
        f"seed={run.seed}", f"data.root={train_root}", "data.min_images_per_identity=2",
        f"+data.val_sets.lfw_dev.pairs={pairs}", f"+data.val_sets.lfw_dev.images={images}",
        "monitor=val/lfw_dev/accuracy", "report_baseline=false", "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip
    record = run_dir / "benchmark.json"
    if record.is_file() and json.loads(record.read_text())["command"] == command[1:]:
        finished = json.loads(record.read_text())
        run.seconds, run.metrics = finished["seconds"], finished["metrics"]
        return run
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    run.seconds = time.perf_counter() - start
    metrics_file = run_dir / "metrics.json"
    if result.returncode != 0 or not metrics_file.is_file():
        run.error = f"exit {result.returncode}: {(result.stderr or result.stdout)[-2000:]}"
    else:
        run.metrics = json.loads(metrics_file.read_text())["lfw_dev"]
        record.write_text(json.dumps({"command": command[1:], "seconds": run.seconds, "metrics": run.metrics}))
    return run


def summarise(runs: list[Run]) -> dict[str, float | int | str]:
    """Mean and population std of the metrics over the successful runs of one head."""
    good = [run for run in runs if run.error is None]
    row: dict[str, float | int | str] = {"seeds": ",".join(str(run.seed) for run in good)}
    for key in METRICS:
        values = [run.metrics[key] for run in good]
        row[key] = statistics.fmean(values) if values else float("nan")
        row[f"{key}_std"] = statistics.pstdev(values) if len(values) > 1 else float("nan")
    row["minutes"] = statistics.fmean(run.seconds for run in good) / 60 if good else float("nan")
    return row


def cell(row: dict, key: str) -> str:
    """``mean ± std`` (or the single value) of a metric."""
    value, spread = row[key], row.get(f"{key}_std", float("nan"))
    return f"{value:.4f}" if spread != spread else f"{value:.4f} ± {spread:.4f}"


def table(rows: dict[str, dict]) -> tuple[Table, str]:
    """The results as a rich table (printed) and as Markdown (written)."""
    columns = ["method", "seeds", "accuracy", "AUC", "TAR@FAR=1e-3", "min/run"]
    rich_table = Table(*columns, title="LFW development protocol: train folds 1-3, verify folds 4-5")
    markdown = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for name, row in rows.items():
        minutes = row.get("minutes")
        cells = [name, str(row.get("seeds", "-")), *(cell(row, key) for key in METRICS)]
        cells.append("-" if minutes is None else f"{minutes:.1f}")
        rich_table.add_row(*cells)
        markdown.append("| " + " | ".join(cells) + " |")
    return rich_table, "\n".join(markdown)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns non-zero if any run failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default=",".join(HEADS), help="comma-separated heads (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; the first is used for every head")
    parser.add_argument("--top", type=int, default=3, help="heads re-trained with every seed (and the recipe's head)")
    parser.add_argument("--quick", action="store_true", help="only the recipe's head with the first seed")
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW, help="folder with images/ and pairs.txt")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: logs/benchmarks/learning/<time>)"
    )
    parser.add_argument(
        "--images", type=Path, default=None, help="images to train and verify on, same paths (default: LFW/images)"
    )
    parser.add_argument(
        "--fallback", type=Path, default=None, help="folder of the same paths for verification photos --images lacks"
    )
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides, e.g. trainer.max_epochs=2")
    args = parser.parse_args(argv)
    if not (args.lfw / "pairs.txt").is_file() or not (args.lfw / "images").is_dir():
        parser.error(f"{args.lfw} needs images/ and pairs.txt (the shared LFW folds: ../shared/data/lfw_folds1-5)")
    images = (args.images or args.lfw / "images").resolve()
    if not images.is_dir():
        parser.error(f"--images {images} is not a folder")
    out = args.out or REPO / "logs" / "benchmarks" / "learning" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = out.resolve()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    cfg = recipe_config(args.overrides)
    recipe_head = cfg.hydra.runtime.choices.head
    heads = [recipe_head] if args.quick else args.heads.split(",")
    unknown = sorted(set(heads) - set(HEADS))
    if unknown:
        parser.error(f"unknown heads {unknown}; choose from {', '.join(HEADS)}")

    train_root, pairs = make_dev_split(args.lfw, out, images=images)
    training = scan_identity_folder(train_root)
    kept = [files for files in training.images if len(files) >= 2]
    verify_root, substituted = verification_root(pairs, images, out, args.fallback)
    val_set = load_pairs_set("lfw_dev", pairs, verify_root)
    shared = {path.split("/")[0] for path in read_pairs(pairs).left + read_pairs(pairs).right} & set(
        training.class_names
    )
    print(
        f"train: {len(kept)} people with >= 2 images, {sum(map(len, kept))} images ({train_root}); "
        f"verify: {len(val_set)} pairs ({pairs}); people in both: {len(shared)}",
        flush=True,
    )
    data = {
        "images": str(images),
        "training_photos_missing": missing_photos(
            args.lfw / "images", images, fold_people(args.lfw / "pairs.txt", TRAIN_FOLDS)
        ),
        "verification_photos_substituted": substituted,
        "pairs_with_a_substitute": affected_pairs(pairs, substituted),
        "fallback": None if args.fallback is None else str(args.fallback.resolve()),
    }
    report = images / "detection_report.json"
    if report.is_file():
        data["detection"] = {key: json.loads(report.read_text())[key] for key in ("counts", "seconds")}
    if images != (args.lfw / "images").resolve():
        substitutes = f"{len(substituted)} from {args.fallback} in {data['pairs_with_a_substitute']} pairs"
        print(
            f"images: {images}; training photos missing there: {len(data['training_photos_missing'])}; "
            f"verification photos substituted: {substitutes if substituted else 0}; "
            f"detection: {data.get('detection', 'no report')}",
            flush=True,
        )
    size, crop = tuple(cfg.data.image_size), cfg.data.crop
    training_images = [path for files in kept for path in files]
    pixels, training_pixels = pixel_rows(val_set.images, size, crop), pixel_rows(training_images, size, crop)
    rows: dict[str, dict] = {
        "raw pixels": raw_pixel_metrics(pixels, val_set),
        f"eigenfaces (PCA-{EIGENFACES})": eigenface_metrics(pixels, training_pixels, val_set, EIGENFACES),
        f"eigenfaces, whitened (PCA-{EIGENFACES})": eigenface_metrics(
            pixels, training_pixels, val_set, EIGENFACES, whiten=True
        ),
    }
    runs: dict[str, list[Run]] = {}
    for head in heads:
        run = train(Run(head, seeds[0]), train_root, pairs, verify_root, out, args.overrides)
        print(f"{head} seed {seeds[0]}: {run.metrics or run.error} ({run.seconds / 60:.1f} min)", flush=True)
        runs[head] = [run]
    if not args.quick and len(seeds) > 1:
        ranked = sorted(heads, key=lambda h: -runs[h][0].metrics.get("accuracy", -1.0))
        repeated = ranked[: args.top] + [h for h in heads if h == recipe_head and h not in ranked[: args.top]]
        for head in repeated:
            for seed in seeds[1:]:
                run = train(Run(head, seed), train_root, pairs, verify_root, out, args.overrides)
                print(f"{head} seed {seed}: {run.metrics or run.error} ({run.seconds / 60:.1f} min)", flush=True)
                runs[head].append(run)
    ranked = sorted(runs, key=lambda h: (-len(runs[h]), -summarise(runs[h])["accuracy"]))
    rows = {head: summarise(runs[head]) for head in ranked} | {
        name: {key: metrics[key] for key in METRICS} | {"seeds": "-"} for name, metrics in rows.items()
    }
    rich_table, markdown = table(rows)
    Console().print(rich_table)
    failed = [run for head_runs in runs.values() for run in head_runs if run.error]
    for run in failed:
        print(f"FAILED {run.head} seed {run.seed}: {run.error}", file=sys.stderr)
    (out / "learning.md").write_text(markdown + "\n")
    (out / "learning.json").write_text(
        json.dumps(
            {
                "table": rows,
                "runs": {head: [vars(run) for run in head_runs] for head, head_runs in runs.items()},
                "data": data,
            },
            indent=2,
        )
    )
    print(f"written to {out / 'learning.md'} and {out / 'learning.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
