"""benchmarks.learning: the development split (tiny and real LFW), and one quick run of the whole script."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.learning import (
    affected_pairs,
    fold_people,
    make_dev_split,
    missing_photos,
    recipe_config,
    verification_root,
)
from benchmarks.learning import main as learning_main
from facerec.data.pixels import pixel_rows
from facerec.data.synthetic import SyntheticSpec, generate
from facerec.data.training.folder import scan_identity_folder
from facerec.data.verification.pairs import read_pairs
from facerec.data.verification.sets import load_pairs_set
from facerec.eval.baseline import raw_pixel_metrics
from tests.helpers import shared_file

# 5 folds of 5 same + 5 different pairs over 12 people with 3 images each, 32x32.
TINY_LFW = SyntheticSpec(
    num_identities=2, images_per_identity=2, heldout_identities=12, heldout_images_per_identity=3,
    folds=5, pairs_per_fold=5, image_size=32,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_lfw(tmp_path_factory):
    """A folder laid out as ``../shared/data/lfw_folds1-5``: ``images/<Name>/<Name>_NNNN.jpg`` and ``pairs.txt``."""
    return generate(tmp_path_factory.mktemp("lfw") / "synthetic", TINY_LFW) / "heldout"


def test_dev_split_trains_on_folds_1_to_3_and_regroups_folds_4_5_into_10_balanced_folds(tiny_lfw, tmp_path):
    train_root, pairs_file = make_dev_split(tiny_lfw, tmp_path)
    original, dev = read_pairs(tiny_lfw / "pairs.txt"), read_pairs(pairs_file)
    assert pairs_file.read_text().splitlines()[0] == "10\t1"
    people = {path.split("/")[0] for path in original.left[:30] + original.right[:30]}
    assert sorted(path.name for path in train_root.iterdir()) == sorted(people)
    assert all((train_root / name).resolve() == (tiny_lfw / "images" / name).resolve() for name in people)
    assert sorted(zip(dev.left, dev.right, dev.issame, strict=True)) == sorted(
        zip(original.left[30:], original.right[30:], original.issame[30:], strict=True)
    )
    assert dev.issame == [True, False] * 10


def test_other_crops_leave_out_missing_training_photos_and_substitute_missing_pair_photos(tiny_lfw, tmp_path):
    """``--images``: photos without a kept face never silently drop a pair; they are counted."""
    aligned = tmp_path / "aligned"
    shutil.copytree(tiny_lfw / "images", aligned)
    trained = sorted(fold_people(tiny_lfw / "pairs.txt", (0, 1, 2)))
    shutil.rmtree(aligned / trained[0])  # no face kept in any photo of this person
    lost = sorted((aligned / trained[1]).iterdir())[0]
    lost.unlink()
    train_root, pairs_file = make_dev_split(tiny_lfw, tmp_path / "work", images=aligned)
    assert sorted(path.name for path in train_root.iterdir()) == trained[1:]
    assert (train_root / trained[1]).resolve() == (aligned / trained[1]).resolve()
    assert missing_photos(tiny_lfw / "images", aligned, trained) == [
        f"{trained[0]}/{path.name}" for path in sorted((tiny_lfw / "images" / trained[0]).iterdir())
    ] + [f"{trained[1]}/{lost.name}"]

    dev = read_pairs(pairs_file)
    aligned = tmp_path / "aligned_all_but_one"  # the tiny folds share people: only a verification photo lost
    shutil.copytree(tiny_lfw / "images", aligned)
    unaligned = dev.left[0]  # a same pair's photo, in further pairs too
    (aligned / unaligned).unlink()
    with pytest.raises(FileNotFoundError, match="1 photos of .* pairs .* --fallback"):
        verification_root(pairs_file, aligned, tmp_path / "work")
    root, substituted = verification_root(pairs_file, aligned, tmp_path / "work", fallback=tiny_lfw / "images")
    assert root == tmp_path / "work" / "verify" and substituted == [unaligned]
    assert (root / unaligned).resolve() == (tiny_lfw / "images" / unaligned).resolve()
    assert (root / dev.right[0]).resolve() == (aligned / dev.right[0]).resolve()
    assert len(load_pairs_set("lfw_dev", pairs_file, root)) == 20  # every pair verified
    uses = [
        same for left, right, same in zip(dev.left, dev.right, dev.issame, strict=True) if unaligned in (left, right)
    ]
    assert affected_pairs(pairs_file, substituted) == {"same": sum(uses), "different": len(uses) - sum(uses)}
    assert verification_root(pairs_file, tiny_lfw / "images", tmp_path / "work") == (tiny_lfw / "images", [])


@pytest.mark.slow  # the benchmark runs train.py as a process
def test_quick_run_prints_the_table_with_baselines_and_reuses_finished_runs(tiny_lfw, tmp_path, capsys):
    arguments = [
        "--quick", "--lfw", str(tiny_lfw), "--out", str(tmp_path),
        "trainer.max_epochs=1", "data.image_size=[32,32]", "data.batch_size=4", "data.num_workers=0",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]  # fmt: skip
    assert learning_main(arguments) == 0, capsys.readouterr()
    head = recipe_config([]).hydra.runtime.choices.head
    table = (tmp_path / "learning.md").read_text()
    for row in (f"| {head} | 0 |", "| raw pixels |", "| eigenfaces (PCA-100) |", "| eigenfaces, whitened (PCA-100) |"):
        assert row in table
    assert "raw pixels" in capsys.readouterr().out
    runs = json.loads((tmp_path / "learning.json").read_text())["runs"]
    assert list(runs) == [head] and 0 <= runs[head][0]["metrics"]["accuracy"] <= 1
    assert "±" not in table  # one seed, and the baselines have no seeds: no spread to show

    assert learning_main(arguments) == 0, capsys.readouterr()
    assert json.loads((tmp_path / "learning.json").read_text())["runs"] == runs  # same run, same recorded time


def test_dev_split_of_the_real_grayscale_lfw_people(tmp_path):
    """The split and the raw-pixel baseline on the shared LFW folds (the script's run is tested on tiny data)."""
    lfw = shared_file("lfw_folds1-5")
    train_root, pairs_file = make_dev_split(lfw, tmp_path)
    kept = [files for files in scan_identity_folder(train_root).images if len(files) >= 2]
    assert (len(kept), sum(map(len, kept))) == (471, 2551)
    val_set = load_pairs_set("lfw_dev", pairs_file, lfw / "images")
    pairs = read_pairs(pairs_file)
    assert len(val_set) == 1200 and not {path.split("/")[0] for path in pairs.left + pairs.right} & {
        path.name for path in train_root.iterdir()
    }
    accuracy = raw_pixel_metrics(pixel_rows(val_set.images, (32, 32)), val_set)["accuracy"]
    assert 0.55 < accuracy < 0.75  # real faces: raw pixels are weak, not chance
