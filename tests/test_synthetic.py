"""The built-in synthetic faces."""

from __future__ import annotations

import json

import numpy as np

from facerec.data.decode import read_image
from facerec.data.pixels import pixel_rows
from facerec.data.synthetic import SyntheticSpec, generate, render, sample_identity
from facerec.data.verification.pairs import read_pairs
from facerec.data.verification.sets import load_pairs_set
from facerec.eval.baseline import raw_pixel_metrics

SPEC = SyntheticSpec(
    num_identities=4, images_per_identity=3, heldout_identities=5, heldout_images_per_identity=3,
    folds=10, pairs_per_fold=2, image_size=48, seed=3,
)  # fmt: skip


def test_layout_matches_casia_and_lfw_conventions(tmp_path):
    root = generate(tmp_path / "syn", SPEC)
    identities = sorted(p.name for p in (root / "train").iterdir())
    assert identities == ["id00000", "id00001", "id00002", "id00003"]
    assert sorted(p.name for p in (root / "train" / "id00002").iterdir()) == [f"id00002_{n:04d}.jpg" for n in (1, 2, 3)]
    assert read_image(root / "train" / "id00000" / "id00000_0001.jpg").shape == (48, 48, 3)
    pairs = read_pairs(root / "heldout" / "pairs.txt")
    assert len(pairs) == 40 and sum(pairs.issame) == 20
    assert pairs.issame[:4] == [True, True, False, False]
    assert all(path.startswith("hid") for path in pairs.left + pairs.right)
    load_pairs_set("synthetic", root / "heldout" / "pairs.txt", root / "heldout" / "images")


def test_deterministic_and_cached(tmp_path):
    first = generate(tmp_path / "a", SPEC)
    second = generate(tmp_path / "b", SPEC)
    for relative in ("train/id00001/id00001_0002.jpg", "heldout/pairs.txt"):
        assert (first / relative).read_bytes() == (second / relative).read_bytes()
    stamp = (first / "spec.json").stat().st_mtime_ns
    generate(tmp_path / "a", SPEC)
    assert (first / "spec.json").stat().st_mtime_ns == stamp


def test_a_different_spec_regenerates(tmp_path):
    root = generate(tmp_path / "syn", SPEC)
    generate(root, SyntheticSpec(**{**SPEC.__dict__, "num_identities": 2}))
    assert len(list((root / "train").iterdir())) == 2
    assert json.loads((root / "spec.json").read_text())["num_identities"] == 2


def test_images_of_one_identity_vary_but_identities_differ():
    rng = np.random.default_rng(0)
    person = sample_identity(rng)
    a, b = render(person, rng).astype(float), render(person, rng).astype(float)
    assert np.abs(a - b).mean() > 10  # pose, light, background and noise differ


def test_raw_pixels_are_a_weak_baseline(tmp_path):
    root = generate(
        tmp_path / "syn",
        SyntheticSpec(
            heldout_identities=20,
            num_identities=1,
            images_per_identity=1,
            heldout_images_per_identity=4,
            pairs_per_fold=10,
            image_size=48,
        ),
    )
    val_set = load_pairs_set("synthetic", root / "heldout" / "pairs.txt", root / "heldout" / "images")
    assert raw_pixel_metrics(pixel_rows(val_set.images, (48, 48)), val_set)["accuracy"] < 0.8
