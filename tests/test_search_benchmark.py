"""benchmarks.search: the search split (tiny hand-made and real LFW), and the whole script on two tiny checkpoints."""

from __future__ import annotations

import json
import random
from collections import Counter

import cv2
import lightning as L
import numpy as np
import pytest

from benchmarks.search import main, search_split, training_images
from tests.helpers import shared_file, smoke_model

# An LFW-like pairs file of 5 folds of 1 same + 1 different line. Folds 1-3 are trained on; folds 4-5
# (Ann, Bob, Cy, Dan, Eve, Fay) are searched; Zed has images but is in no fold.
PAIRS = """5\t1
Tom\t1\t2
Uma\t1\tVal\t1
Tom\t1\t2
Uma\t2\tVal\t1
Uma\t1\t2
Tom\t2\tVal\t1
Ann\t1\t2
Bob\t1\tCy\t1
Dan\t1\t3
Eve\t1\tFay\t1
"""
IMAGES = {"Tom": 2, "Uma": 2, "Val": 1, "Ann": 3, "Bob": 2, "Cy": 1, "Dan": 3, "Eve": 2, "Fay": 1, "Zed": 2}


@pytest.fixture(scope="module")
def tiny_lfw(tmp_path_factory):
    """``images/<Name>/<Name>_NNNN.jpg`` (16x16 grey noise) and ``pairs.txt``, laid out as ``lfw_folds1-5``."""
    root = tmp_path_factory.mktemp("lfw")
    rng = np.random.default_rng(0)
    for name, count in IMAGES.items():
        (root / "images" / name).mkdir(parents=True)
        for number in range(1, count + 1):
            cv2.imwrite(str(root / "images" / name / f"{name}_{number:04d}.jpg"), rng.integers(0, 256, (16, 16)))
    (root / "pairs.txt").write_text(PAIRS)
    return root


def names(paths) -> list[str]:
    return [path.name.removesuffix(".jpg") for path in paths]


def test_split_of_a_tiny_lfw_is_seeded_and_hand_checkable(tiny_lfw):
    split = search_split(tiny_lfw, unenrolled=0.25, seed=0)
    assert split.people == ["Ann", "Bob", "Dan", "Eve"]  # folds 4-5, >= 2 images, sorted; Zed is in no fold
    assert names(split.distractors) == ["Cy_0001", "Fay_0001"]  # folds 4-5 people with a single image
    # round(0.25 * 4) = 1 person left out, then one image per other person, both drawn by random.Random(0):
    rng = random.Random(0)
    left_out = rng.sample(split.people, 1)
    chosen = {name: rng.randrange(IMAGES[name]) + 1 for name in split.people if name not in left_out}
    assert split.unenrolled == left_out == ["Eve"]
    assert names(split.gallery) == [f"{name}_{number:04d}" for name, number in chosen.items()]
    assert [split.people[label] for label in split.gallery_labels] == ["Ann", "Bob", "Dan"]
    probes = dict(zip(names(split.probes), split.probe_labels, strict=True))
    assert sorted(probes) == sorted(
        f"{name}_{number:04d}" for name in split.people for number in range(1, IMAGES[name] + 1)
        if f"{name}_{number:04d}" not in names(split.gallery)
    )  # fmt: skip
    assert all(split.people[label] == name.split("_")[0] for name, label in probes.items())
    assert split.counts() == {
        "people": 6, "gallery identities": 3, "distractors": 2, "unenrolled people": 1,
        "mated probes": (3 - 1) + (2 - 1) + (3 - 1), "non-mated probes": 2,
    }  # fmt: skip
    assert search_split(tiny_lfw, unenrolled=0.25, seed=0) == split
    assert search_split(tiny_lfw, unenrolled=0.0, seed=0).counts()["non-mated probes"] == 0
    capped = search_split(tiny_lfw, unenrolled=0.25, seed=0, max_probes=1)
    assert capped.unenrolled == split.unenrolled and not set(capped.probes) & set(capped.gallery)
    assert sorted(capped.probe_labels) == [0, 1, 2, 3]  # one probe each of Ann, Bob, Dan and the unenrolled Eve
    assert names(training_images(tiny_lfw)) == ["Tom_0001", "Tom_0002", "Uma_0001", "Uma_0002"]  # Val: 1 image


def save_checkpoint(path, seed: int) -> None:
    """An untrained ``experiment=smoke`` model (32x32 input) saved as a training checkpoint."""
    L.seed_everything(seed, verbose=False)
    model = smoke_model()
    trainer = L.Trainer(accelerator="cpu", logger=False, max_steps=0, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)


def test_main_searches_every_run_and_the_baselines(tiny_lfw, tmp_path, capsys):
    runs = tmp_path / "learning"
    for seed in (0, 1):
        save_checkpoint(runs / "runs" / f"softmax_seed{seed}" / "checkpoints" / "last.ckpt", seed)
    (runs / "runs" / "softmax_seed0" / "benchmark.json").write_text(json.dumps({"metrics": {"accuracy": 0.75}}))
    (runs / "runs" / "cosface_seed0").mkdir()  # an unfinished run without a checkpoint is skipped
    out = tmp_path / "out"
    assert main(["--runs", str(runs), "--lfw", str(tiny_lfw), "--out", str(out), "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "3 gallery identities, 2 distractors, 1 unenrolled people, 5 mated probes, 2 non-mated probes" in printed
    table = (out / "search.md").read_text()
    for row in ("| softmax | 0,1 |", "| raw pixels | - |", "| eigenfaces (PCA-100) |", "| eigenfaces, whitened"):
        assert row in table
    assert "cosface" not in table
    result = json.loads((out / "search.json").read_text())
    assert result["protocol"]["counts"]["mated probes"] == 5
    assert result["protocol"]["baseline input"] == {"input_size": [32, 32], "crop": None, "pca_training_images": 4}
    softmax = result["table"]["softmax"]
    assert softmax["verification accuracy"] == 0.75  # only seed 0 recorded one
    for key in ("rank-1", "rank-5", "dir@fpir=1e-2", "dir@fpir=1e-1"):
        values = [run["metrics"][key] for run in result["runs"]["softmax"]]
        assert all(0 <= value <= 1 for value in values)
        assert softmax[key] == pytest.approx(np.mean(values)) and softmax[f"{key}_std"] == pytest.approx(np.std(values))
    assert result["table"]["raw pixels"]["rank-5"] == 1.0  # 3 identities + 2 distractors: every mated probe is in


def test_split_of_the_real_lfw_folds_4_5(tmp_path):
    split = search_split(shared_file("lfw_folds1-5"))
    assert split.counts() == {
        "people": 845, "gallery identities": 227, "distractors": 542, "unenrolled people": 76,
        "mated probes": 624, "non-mated probes": 292,
    }  # fmt: skip
    assert max(Counter(split.probe_labels).values()) == 10  # Colin Powell's 235 probe images capped
    assert not {path.parent.name for path in split.images} & {
        path.parent.name for path in training_images(shared_file("lfw_folds1-5"))
    }
