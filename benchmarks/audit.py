"""How well ``python -m facerec.data audit`` finds errors planted in real faces: precision and recall per kind.

Protocol (LFW View-2 people, ``../shared/data/lfw_folds1-5``; a model trained on the people of folds 1–3, as
``python -m benchmarks.learning`` trains them, so no audited person was trained on):

- the audited set is the people of fold 4 (``--audit-fold``, 0-based 3): 423 people, 1,181 images, linked into
  ``<out>/seed<k>/train/<Name>/`` (files are copied only where planted);
- the verification set is the 600 pairs of fold 5 (``--against-fold``): ``<out>/against_pairs.txt``;
- with each seed, errors are planted on disjoint images:

  - **label errors**: 2 % of the images whose person has at least two, moved into another person's folder;
  - **exact duplicates**: 0.5 % of the images copied byte for byte beside themselves (``*_dup.jpg``);
  - **near duplicates**: 0.5 % shrunk to 75 % and enlarged back, then saved as JPEG quality 70 (``*_near.jpg``);
  - **identity merges** (one person in two folders): ``--splits`` people with at least 4 images have half their
    images moved into a new folder ``<Name>_split``;
  - **verification overlap**: ``--added`` people of the verification pairs who have photos the pairs do not use
    (40 such people) are copied in with only those photos, under another name (``Added_<k>``): the same person,
    never the same photo;

- the audit (``python -m facerec.data audit``, the real entry point) runs once per set at thresholds looser than
  any scored (:data:`LOOSE`); its reports are then scored at the audit's defaults and at each :data:`SWEEP`
  threshold. A report is right if it names a planted error of its kind (for duplicates and merges: the planted
  pair), wrong otherwise; the wrong ones also reported on the unplanted set (audited once as ``<out>/clean``:
  LFW's own errors, or the model's mistakes on correct labels) are counted too.

Usage::

    python -m benchmarks.audit --model CKPT --out DIR [--seeds 0,1,2]

The tables (pooled over the seeds) are printed and written to ``<out>/audit.md``; the counts per seed to
``<out>/audit.json``. About 1.5–3 minutes per set on a loaded 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import cv2

from benchmarks.learning import DEFAULT_LFW, REPO, fold_people, pair_folds
from facerec.data.audit.run import Thresholds
from facerec.data.decode import encode_jpeg, read_image
from facerec.data.verification.pairs import read_pairs

KINDS = ("label_errors", "exact_duplicates", "near_duplicates", "merges", "overlap")
LOOSE = ["--near-duplicate", "0.9", "--label-margin", "0", "--merge", "0.5", "--overlap", "0.5"]
"""The audit's thresholds in the benchmark: looser than any scored, so one run serves every threshold."""
SWEEP = (
    ("label_margin", "label_errors", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)),
    ("near_duplicate", "near_duplicates", (0.9, 0.95, 0.97, 0.98)),
    ("merge", "merges", (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)),
    ("overlap", "overlap", (0.6, 0.7, 0.75, 0.8, 0.85, 0.9)),
)
"""Thresholds whose pooled precision and recall are tabled: (Thresholds field, kind, values)."""


def write_against_pairs(lfw: Path, fold: int, path: Path) -> Path:
    """Fold ``fold``'s lines of the LFW ``pairs.txt`` as a one-fold pairs file at ``path``."""
    _, n = pair_folds(lfw / "pairs.txt")
    lines = (lfw / "pairs.txt").read_text().splitlines()[1:]
    path.write_text("\n".join([f"1\t{n}", *lines[fold * 2 * n : (fold + 1) * 2 * n]]) + "\n")
    return path


def link_people(lfw: Path, people: Iterable[str], root: Path) -> dict[str, list[str]]:
    """Links every image of ``people`` into ``root/<Name>/``; returns each person's file names."""
    files = {}
    for person in sorted(people):
        (root / person).mkdir(parents=True)
        files[person] = sorted(path.name for path in (lfw / "images" / person).iterdir())
        for name in files[person]:
            (root / person / name).symlink_to(lfw / "images" / person / name)
    return files


def plant(lfw: Path, people: set[str], against: set[str], root: Path, seed: int, splits: int, added: int) -> dict:
    """Builds the audited set at ``root`` with planted errors; returns the truth (relative paths and names).

    ``against``: the verification set's images (``Name/Name_NNNN.jpg``); an added person brings only photos
    that are not among them.
    """
    rng = random.Random(seed)
    files = link_people(lfw, people, root)
    images = [f"{person}/{name}" for person in sorted(files) for name in files[person]]
    several = [path for path in images if len(files[path.split("/")[0]]) >= 2]
    used: set[str] = set()

    def pick(pool: list[str], count: int) -> list[str]:
        chosen = rng.sample(sorted(set(pool) - used), count)
        used.update(chosen)
        return chosen

    big = [person for person in sorted(files) if len(files[person]) >= 4]
    split_people = rng.sample(big, splits)
    used.update(f"{person}/{name}" for person in split_people for name in files[person])
    truth: dict[str, list] = {kind: [] for kind in KINDS}
    for path in pick(several, round(0.02 * len(images))):
        person, name = path.split("/")
        target = rng.choice(sorted(set(files) - {person} - set(split_people)))
        (root / path).rename(root / target / name)
        truth["label_errors"].append(f"{target}/{name}")
    for path in pick(images, round(0.005 * len(images))):
        copy = path.replace(".jpg", "_dup.jpg")
        shutil.copyfile(root / path, root / copy)
        truth["exact_duplicates"].append(sorted([path, copy]))
    for path in pick(images, round(0.005 * len(images))):
        copy = path.replace(".jpg", "_near.jpg")
        image = read_image(root / path)
        height, width = image.shape[:2]
        small = cv2.resize(image, (width * 3 // 4, height * 3 // 4), interpolation=cv2.INTER_AREA)
        (root / copy).write_bytes(encode_jpeg(cv2.resize(small, (width, height)), quality=70))
        truth["near_duplicates"].append(sorted([path, copy]))
    for person in split_people:
        (root / f"{person}_split").mkdir()
        for name in files[person][len(files[person]) // 2 :]:
            (root / person / name).rename(root / f"{person}_split" / name)
        truth["merges"].append(sorted([person, f"{person}_split"]))
    unseen = {
        person: [
            name
            for name in sorted(p.name for p in (lfw / "images" / person).iterdir())
            if f"{person}/{name}" not in against
        ]
        for person in {path.split("/")[0] for path in against}
    }
    for number, person in enumerate(rng.sample(sorted(p for p, names in unseen.items() if names), added)):
        (root / f"Added_{number}").mkdir()
        for name in unseen[person]:
            shutil.copyfile(lfw / "images" / person / name, root / f"Added_{number}" / name)
        truth["overlap"].append([f"Added_{number}", person])
    return truth


def reported(report: dict, thresholds: Thresholds) -> dict[str, set]:
    """The report's findings at ``thresholds`` (at least as strict as the audit's own) as comparable items."""
    exact = {tuple(sorted(pair)) for group in report["exact_duplicates"] for pair in _pairs(group["paths"])}
    return {
        "label_errors": {
            entry["path"]
            for entry in report["label_errors"]
            if entry["closest_cosine"] - entry["own_cosine"] >= thresholds.label_margin
        },
        "exact_duplicates": exact,
        "near_duplicates": {
            tuple(sorted(entry["paths"]))
            for entry in report["near_duplicates"]
            if entry["cosine"] >= thresholds.near_duplicate
        },
        "merges": {
            tuple(sorted(entry["identities"])) for entry in report["merges"] if entry["cosine"] >= thresholds.merge
        },
        "overlap": {
            (entry["identity"], entry["person"]) for entry in report["overlap"] if entry["cosine"] >= thresholds.overlap
        },
    }


def _pairs(items: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]


def _hashable(item) -> object:
    return tuple(item) if isinstance(item, list) else item


def score(found: dict[str, set], truth: dict[str, list], clean: dict[str, set]) -> dict[str, dict[str, int]]:
    """Per kind: planted, reported, right (a planted error), wrong (the rest), and of the wrong ones those also
    reported on the clean set (``clean``: LFW's own errors, or the model's mistakes on unplanted faces).
    """
    counts = {}
    for kind in KINDS:
        planted = {_hashable(item) for item in truth[kind]}
        right = found[kind] & planted
        counts[kind] = {
            "planted": len(planted),
            "reported": len(found[kind]),
            "right": len(right),
            "wrong": len(found[kind]) - len(right),
            "also_clean": len((found[kind] - planted) & clean[kind]),
        }
    return counts


def run_audit(root: Path, model: Path, out: Path, against: Path, images: Path) -> dict:
    """``python -m facerec.data audit`` (the entry point) at the :data:`LOOSE` thresholds; returns its report."""
    command = [sys.executable, "-m", "facerec.data", "audit", str(root), "--model", str(model), "--out", str(out)]
    command += ["--against", str(against), "--against-images", str(images), "--workers", "0", *LOOSE]
    subprocess.run(command, cwd=REPO, check=True, stdin=subprocess.DEVNULL)
    return json.loads((out / "audit.json").read_text())


def add(totals: dict[str, dict[str, int]], counts: dict[str, dict[str, int]]) -> None:
    """Adds one seed's :func:`score` into ``totals``."""
    for kind, numbers in counts.items():
        for key, value in numbers.items():
            totals[kind][key] = totals[kind].get(key, 0) + value


def table(totals: dict[str, dict[str, int]], thresholds: Thresholds) -> str:
    """Markdown table of pooled counts, precision and recall per kind at ``thresholds``."""
    limits = {
        "label_errors": f"margin {thresholds.label_margin}",
        "exact_duplicates": "same pixels",
        "near_duplicates": f"cosine {thresholds.near_duplicate}",
        "merges": f"cosine {thresholds.merge}",
        "overlap": f"cosine {thresholds.overlap}",
    }
    lines = [
        "| kind | threshold | planted | reported | right | wrong | wrong, also on the clean set | precision | recall |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, c in totals.items():
        precision = c["right"] / c["reported"] if c["reported"] else float("nan")
        recall = c["right"] / c["planted"] if c["planted"] else float("nan")
        lines.append(
            f"| {kind.replace('_', ' ')} | {limits[kind]} | {c['planted']} | {c['reported']} | {c['right']} | "
            f"{c['wrong']} | {c['also_clean']} | {precision:.2f} | {recall:.2f} |"
        )
    return "\n".join(lines)


def sweep(reports: list[tuple[dict, dict]], clean: dict) -> str:
    """Pooled precision / recall of each kind at each :data:`SWEEP` threshold (the others at their defaults)."""
    lines = ["| kind | threshold | reported | precision | recall |", "|---|---:|---:|---:|---:|"]
    for field, kind, values in SWEEP:
        for value in values:
            thresholds = replace(Thresholds(), **{field: value})
            totals: dict[str, dict[str, int]] = {name: {} for name in KINDS}
            for report, truth in reports:
                add(totals, score(reported(report, thresholds), truth, reported(clean, thresholds)))
            c = totals[kind]
            precision = c["right"] / c["reported"] if c["reported"] else float("nan")
            lines.append(
                f"| {kind.replace('_', ' ')} | {value} | {c['reported']} | {precision:.2f} | "
                f"{c['right'] / c['planted']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Plants, audits and scores every seed; prints and writes the pooled tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint trained on folds 1-3 people")
    parser.add_argument("--out", type=Path, required=True, help="new folder")
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW, help="folder with images/ and pairs.txt")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--audit-fold", type=int, default=3, help="0-based fold whose people are audited")
    parser.add_argument("--against-fold", type=int, default=4, help="0-based fold whose pairs are the verification")
    parser.add_argument("--splits", type=int, default=5, help="people split into two folders per seed")
    parser.add_argument("--added", type=int, default=10, help="verification people added per seed")
    args = parser.parse_args(argv)
    out, lfw, model = args.out.resolve(), args.lfw.resolve(), args.model.resolve()
    out.mkdir(parents=True, exist_ok=False)
    people = fold_people(lfw / "pairs.txt", [args.audit_fold])
    against = write_against_pairs(lfw, args.against_fold, out / "against_pairs.txt")
    protocol = read_pairs(against)
    against_images = set(protocol.left + protocol.right)
    link_people(lfw, people, out / "clean" / "train")
    clean = run_audit(out / "clean" / "train", model, out / "clean" / "audit", against, lfw / "images")
    defaults = Thresholds()
    totals: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
    reports, per_seed = [], {}
    for seed in map(int, args.seeds.split(",")):
        work = out / f"seed{seed}"
        truth = plant(lfw, people, against_images, work / "train", seed, args.splits, args.added)
        (work / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
        report = run_audit(work / "train", model, work / "audit", against, lfw / "images")
        reports.append((report, truth))
        per_seed[seed] = score(reported(report, defaults), truth, reported(clean, defaults))
        add(totals, per_seed[seed])
        print(f"seed {seed}: {json.dumps(per_seed[seed])}", flush=True)
    text = table(totals, defaults) + "\n\n" + sweep(reports, clean)
    print(text)
    (out / "audit.md").write_text(text + "\n")
    (out / "audit.json").write_text(json.dumps({"per_seed": per_seed, "pooled": totals}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
