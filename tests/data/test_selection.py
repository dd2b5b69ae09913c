"""data.min_images_per_identity / data.max_images_per_identity: hand-worked selections and both training formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facerec.data import FaceDataModule
from facerec.data.decode import encode_jpeg
from facerec.data.tools import folder_to_rec
from facerec.data.training.selection import IdentitySubset, select_images

# Labels of 9 samples: identity 0 has 1 image, identity 1 has 3, identity 2 has 5.
LABELS = [1, 0, 2, 1, 2, 2, 1, 2, 2]


def test_min_images_drops_small_identities():
    samples, kept = select_images(LABELS, min_images=2)
    assert kept.tolist() == [1, 2]
    assert samples.tolist() == [0, 2, 3, 4, 5, 6, 7, 8]


def test_max_images_caps_large_identities_with_a_stable_seeded_draw():
    samples, kept = select_images(LABELS, min_images=1, max_images=3, seed=7)
    assert kept.tolist() == [0, 1, 2]
    labels = np.asarray(LABELS)[samples]
    assert np.bincount(labels).tolist() == [1, 3, 3]
    assert set(samples[labels == 2]) < {2, 4, 5, 7, 8}
    again, _ = select_images(LABELS, min_images=1, max_images=3, seed=7)
    assert again.tolist() == samples.tolist()
    draws = {tuple(select_images(LABELS, max_images=3, seed=seed)[0]) for seed in range(10)}
    assert len(draws) > 1


def test_defaults_keep_everything():
    samples, kept = select_images(LABELS)
    assert samples.tolist() == list(range(9)) and kept.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("minimum", "maximum", "message"),
    [(0, None, "min_images_per_identity must be >= 1"), (3, 2, "max_images_per_identity must be >= 1 and >= ")],
)
def test_invalid_bounds_are_explained(minimum, maximum, message):
    with pytest.raises(ValueError, match=message):
        select_images(LABELS, minimum, maximum)


class Samples:
    """A stand-in training set whose sample i is the string ``"image<i>"``."""

    transform = "the transform"

    def __init__(self) -> None:
        self.labels = np.asarray(LABELS)
        self.class_names = ["ann", "bob", "cid"]

    def __getitem__(self, i: int) -> tuple[str, int]:
        return f"image{i}", int(self.labels[i])


def test_subset_relabels_the_identities_left():
    samples, kept = select_images(LABELS, min_images=2)
    subset = IdentitySubset(Samples(), samples, kept)
    assert subset.class_names == ["bob", "cid"]
    assert len(subset) == 8
    assert [subset[i] for i in range(3)] == [("image0", 0), ("image2", 1), ("image3", 0)]
    assert subset.labels.tolist() == [0, 1, 0, 1, 1, 0, 1, 1]
    assert subset.transform == "the transform"


@pytest.fixture
def uneven_folder(tmp_path) -> Path:
    """``root/<name>/<k>.jpg``: 'ann' 1 image, 'bob' 3, 'cid' 5; pixel value = 40·identity + 5 + k."""
    root = tmp_path / "train"
    for identity, (name, count) in enumerate([("ann", 1), ("bob", 3), ("cid", 5)]):
        (root / name).mkdir(parents=True)
        for k in range(count):
            (root / name / f"{k}.jpg").write_bytes(encode_jpeg(np.full((8, 8, 3), 40 * identity + 5 + k, np.uint8)))
    return root


@pytest.mark.parametrize("format", ["folder", "rec"])
def test_datamodule_applies_both_bounds_to_either_format(uneven_folder, tmp_path, format):
    root = uneven_folder
    if format == "rec":
        folder_to_rec(uneven_folder, tmp_path / "rec")
        root = tmp_path / "rec"
    datamodule = FaceDataModule(
        root=str(root),
        format=format,
        image_size=(8, 8),
        augment="none",
        min_images_per_identity=2,
        max_images_per_identity=4,
        num_workers=0,
    )
    expected_names = ["bob", "cid"] if format == "folder" else ["1", "2"]
    assert datamodule.class_names == expected_names and datamodule.num_classes == 2
    datamodule.setup("fit")
    assert np.bincount(datamodule.train_set.labels).tolist() == [3, 4]
    for image, label in (datamodule.train_set[i] for i in range(len(datamodule.train_set))):
        identity = round((float(image[0, 0, 0]) + 1) * 127.5) // 40  # a flat JPEG decodes to within ±1
        assert identity == label + 1


def test_datamodule_without_any_identity_left_is_explained(uneven_folder):
    datamodule = FaceDataModule(root=str(uneven_folder), min_images_per_identity=6, num_workers=0)
    with pytest.raises(
        ValueError, match=r"no identity has data.min_images_per_identity=6 images \(the largest has 5\)"
    ):
        _ = datamodule.class_names
