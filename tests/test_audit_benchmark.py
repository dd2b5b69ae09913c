"""benchmarks.audit: the planted errors on a tiny LFW-like folder, and their scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.audit import plant, reported, score
from facerec.data.audit.run import Thresholds
from facerec.data.decode import encode_jpeg
from facerec.data.training.folder import scan_identity_folder

# the audited people (Ann..Fay) and the verification people (Val: pairs use 1 and 2, Wes: pairs use his only one)
IMAGES = {"Ann": 8, "Bob": 8, "Cy": 6, "Dan": 4, "Eve": 6, "Fay": 1, "Val": 3, "Wes": 1}
AGAINST = {"Val/Val_0001.jpg", "Val/Val_0002.jpg", "Wes/Wes_0001.jpg"}


@pytest.fixture
def lfw(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in IMAGES.items():
        (tmp_path / "lfw" / "images" / name).mkdir(parents=True)
        for number in range(1, count + 1):
            image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            (tmp_path / "lfw" / "images" / name / f"{name}_{number:04d}.jpg").write_bytes(encode_jpeg(image))
    return tmp_path / "lfw"


def test_planting_moves_copies_splits_and_adds_as_its_truth_says(lfw, tmp_path):
    people = {"Ann", "Bob", "Cy", "Dan", "Eve", "Fay"}
    truth = plant(lfw, people, AGAINST, tmp_path / "train", seed=0, splits=1, added=1)
    # 33 images: 2 % -> 1 relabelled, 0.5 % -> 0 copies each (rounded)
    assert len(truth["label_errors"]) == 1 and truth["exact_duplicates"] == truth["near_duplicates"] == []
    (moved,) = truth["label_errors"]
    assert (tmp_path / "train" / moved).is_file() and not (lfw / "images" / moved).exists()
    (split,) = truth["merges"]
    assert split[1] == f"{split[0]}_split" and (tmp_path / "train" / split[1]).is_dir()
    assert truth["overlap"] == [["Added_0", "Val"]]
    assert sorted(p.name for p in (tmp_path / "train" / "Added_0").iterdir()) == ["Val_0003.jpg"]
    folder = scan_identity_folder(tmp_path / "train")
    assert len(folder.paths) == 33 + 1 and json.loads(json.dumps(truth)) == truth
    assert len(list((lfw / "images").rglob("*.jpg"))) == sum(IMAGES.values())  # the source is left as it was


def test_scoring_counts_right_and_wrong_reports_at_a_threshold():
    truth = {
        "label_errors": ["Ann/x.jpg", "Bob/y.jpg"],
        "exact_duplicates": [["Ann/a.jpg", "Ann/a_dup.jpg"]],
        "near_duplicates": [["Bob/b.jpg", "Bob/b_near.jpg"]],
        "merges": [["Cy", "Cy_split"]],
        "overlap": [["Added_0", "Val"]],
    }
    report = {
        "label_errors": [
            {"path": "Ann/x.jpg", "own_cosine": 0.0, "closest_cosine": 0.9},
            {"path": "Eve/z.jpg", "own_cosine": 0.2, "closest_cosine": 0.8},
            {"path": "Bob/y.jpg", "own_cosine": 0.5, "closest_cosine": 0.6},
        ],
        "exact_duplicates": [{"paths": ["Ann/a.jpg", "Ann/a_dup.jpg", "Dan/d.jpg"]}],
        "near_duplicates": [{"paths": ["Bob/b_near.jpg", "Bob/b.jpg"], "cosine": 0.99}],
        "merges": [{"identities": ["Cy_split", "Cy"], "cosine": 0.79}],
        "overlap": [{"identity": "Added_0", "person": "Val", "cosine": 0.9}],
    }
    clean = {kind: set() for kind in truth} | {"label_errors": {"Eve/z.jpg"}}
    counts = score(reported(report, Thresholds(label_margin=0.5, merge=0.8)), truth, clean)
    assert counts["label_errors"] == {"planted": 2, "reported": 2, "right": 1, "wrong": 1, "also_clean": 1}
    assert counts["exact_duplicates"] == {"planted": 1, "reported": 3, "right": 1, "wrong": 2, "also_clean": 0}
    assert counts["near_duplicates"]["right"] == 1 and counts["overlap"]["right"] == 1
    assert counts["merges"] == {"planted": 1, "reported": 0, "right": 0, "wrong": 0, "also_clean": 0}
