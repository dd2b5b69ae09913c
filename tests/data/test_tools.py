"""Dataset tools and their CLI: check, folder2rec, rec2folder, make-pairs."""

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.data.__main__ import main
from facerec.data.decode import encode_jpeg
from facerec.data.tools import check, folder_to_rec, make_pairs, rec_to_folder
from facerec.data.training.folder import scan_identity_folder
from facerec.data.training.rec_dataset import RecordDataset
from facerec.data.training.recordio import IRHeader, RecordWriter, pack, unpack
from facerec.data.verification.pairs import read_pairs

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def image(value: int, size: tuple[int, int] = (8, 6)) -> np.ndarray:
    return np.full((*size, 3), value, dtype=np.uint8)


def identity_folder(root: Path) -> Path:
    """alice: 2 JPEGs (one nested), bob: 1 PNG 10x10, carol: empty, plus a notes.txt and hidden files."""
    (root / "alice" / "sub").mkdir(parents=True)
    (root / "alice" / "a.jpg").write_bytes(encode_jpeg(image(10)))
    (root / "alice" / "sub" / "b.JPEG").write_bytes(encode_jpeg(image(20)))
    (root / "bob").mkdir()
    cv2.imwrite(str(root / "bob" / "c.png"), image(30, (10, 10)))
    (root / "bob" / "notes.txt").write_text("not an image")
    (root / "carol").mkdir()
    (root / ".cache" / "x").mkdir(parents=True)
    (root / ".cache" / "x" / "d.jpg").write_bytes(encode_jpeg(image(40)))
    (root / "bob" / ".ipynb_checkpoints").mkdir()
    (root / "bob" / ".ipynb_checkpoints" / "e.jpg").write_bytes(encode_jpeg(image(50)))
    (root / ".DS_Store").write_bytes(b"junk")
    return root


def test_scan_identity_folder_skips_empty_identities_and_hidden_files(tmp_path):
    root = identity_folder(tmp_path / "faces")
    (root / "labels.csv").write_text("a file beside the identity folders")
    folder = scan_identity_folder(root)
    assert folder.class_names == ["alice", "bob"] and folder.empty_identities == ["carol"]
    assert [[path.name for path in files] for files in folder.images] == [["a.jpg", "b.JPEG"], ["c.png"]]
    assert folder.labels == [0, 0, 1] and [path.name for path in folder.skipped_files] == ["labels.csv", "notes.txt"]


def test_scan_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"identity folder not found: .*nope"):
        scan_identity_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"no images found under .*expected .*/<identity>/<image>"):
        scan_identity_folder(tmp_path)


def test_folder2rec_insightface_layout_with_training_labels(tmp_path, caplog):
    src = identity_folder(tmp_path / "faces")
    assert folder_to_rec(src, tmp_path / "rec") == (3, 2)
    assert "skipped 1 identity folders without images (no label, as in training): carol" in caplog.text
    dataset = RecordDataset(tmp_path / "rec")
    assert dataset.labels == scan_identity_folder(src).labels == [0, 0, 1] and dataset.num_classes == 2
    reader = dataset.reader
    assert reader.keys == [0, 1, 2, 3, 4, 5]
    assert unpack(reader.read(0))[0].label.tolist() == [4.0, 6.0]
    assert [unpack(reader.read(key))[0].label.tolist() for key in (4, 5)] == [[1, 3], [3, 4]]
    assert unpack(reader.read(1))[1] == (src / "alice" / "a.jpg").read_bytes()
    assert unpack(reader.read(3))[1].startswith(b"\xff\xd8\xff")
    assert dataset[2][0].shape == (10, 10, 3)


def test_folder2rec_rec2folder_round_trip(tmp_path):
    folder_to_rec(identity_folder(tmp_path / "faces"), tmp_path / "rec")
    assert rec_to_folder(tmp_path / "rec", tmp_path / "back") == (3, 2)
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in (tmp_path / "back").rglob("*")) == [
        "0",
        "0/1.jpg",
        "0/2.jpg",
        "1",
        "1/3.jpg",
    ]
    folder_to_rec(tmp_path / "back", tmp_path / "rec2")
    for name in ("train.rec", "train.idx"):
        assert (tmp_path / "rec2" / name).read_bytes() == (tmp_path / "rec" / name).read_bytes()


def test_rec2folder_keeps_png_and_pads_names(tmp_path):
    png = cv2.imencode(".png", image(5))[1].tobytes()
    (tmp_path / "rec").mkdir()
    with RecordWriter(tmp_path / "rec" / "train.rec") as writer:
        for key in range(11):
            writer.write(key, pack(IRHeader(0, key, key, 0), png))
    rec_to_folder(tmp_path / "rec", tmp_path / "out")
    assert (tmp_path / "out" / "00" / "00.png").read_bytes() == png
    assert (tmp_path / "out" / "10" / "10.png").is_file()


def test_rec2folder_corrupt_record(tmp_path):
    (tmp_path / "rec").mkdir()
    with RecordWriter(tmp_path / "rec" / "train.rec") as writer:
        writer.write(0, pack(IRHeader(0, 0, 0, 0), b"garbage"))
    with pytest.raises(ValueError, match=r"cannot decode image .*train\.rec@0"):
        rec_to_folder(tmp_path / "rec", tmp_path / "out")


def test_folder2rec_corrupt_source(tmp_path):
    (tmp_path / "faces" / "a").mkdir(parents=True)
    (tmp_path / "faces" / "a" / "x.jpg").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"cannot decode image .*faces/a/x\.jpg"):
        folder_to_rec(tmp_path / "faces", tmp_path / "rec")


def test_folder2rec_corrupt_source_leaves_existing_destination_untouched(tmp_path, capsys):
    folder_to_rec(identity_folder(tmp_path / "faces"), tmp_path / "rec")
    before = {name: (tmp_path / "rec" / name).read_bytes() for name in ("train.rec", "train.idx")}
    (tmp_path / "faces" / "bob" / "z_broken.jpg").write_bytes(b"\xff\xd8\xffbroken")
    message = r"cannot decode image .*bob/z_broken\.jpg .*nothing was written to .*python -m facerec\.data check"
    with pytest.raises(ValueError, match=message):
        folder_to_rec(tmp_path / "faces", tmp_path / "rec")
    assert main(["folder2rec", str(tmp_path / "faces"), str(tmp_path / "rec")]) == 2
    assert "bob/z_broken.jpg" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "rec").iterdir()) == ["train.idx", "train.rec"]
    assert {name: (tmp_path / "rec" / name).read_bytes() for name in before} == before
    with pytest.raises(ValueError, match=r"z_broken\.jpg"):
        folder_to_rec(tmp_path / "faces", tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_folder2rec_replaces_destination_files_instead_of_rewriting_them(tmp_path):
    old_src = tmp_path / "old"
    (old_src / "a").mkdir(parents=True)
    (old_src / "a" / "x.jpg").write_bytes(encode_jpeg(image(10)))
    folder_to_rec(old_src, tmp_path / "rec")
    old_bytes = (tmp_path / "rec" / "train.rec").read_bytes()
    descriptor = os.open(tmp_path / "rec" / "train.rec", os.O_RDONLY)  # a training run reading the old file
    try:
        assert main(["folder2rec", str(identity_folder(tmp_path / "faces")), str(tmp_path / "rec")]) == 0
        assert os.pread(descriptor, len(old_bytes) + 1, 0) == old_bytes, "the open train.rec was rewritten in place"
    finally:
        os.close(descriptor)
    assert sorted(path.name for path in (tmp_path / "rec").iterdir()) == ["train.idx", "train.rec"]
    dataset = RecordDataset(tmp_path / "rec")
    assert len(dataset) == 3 and dataset.labels == [0, 0, 1] and dataset.num_classes == 2
    assert dataset[0][0][0, 0, 0] == 10 and dataset[2][0].shape == (10, 10, 3)


def test_check_identity_folder(tmp_path, capsys):
    src = identity_folder(tmp_path / "faces")
    report = check(src)
    assert report.images_per_identity == [2, 1] and report.empty == ["carol"] and not report.corrupt
    assert report.sizes == {(8, 6): 2, (10, 10): 1}
    assert main(["check", str(src)]) == 0
    out = capsys.readouterr().out
    assert "identities: 2" in out and "images: 3 (per identity: min 1, max 2)" in out
    assert "image sizes (HxW): 8x6: 2, 10x10: 1" in out and "empty identities: 1\n  carol" in out
    assert "non-image files: 1" in out and "notes.txt" in out
    (src / "bob" / "broken.jpg").write_bytes(b"\xff\xd8\xffbroken")
    assert main(["check", str(src)]) == 1
    assert re.search(
        r"corrupt or unreadable images: 1\n  cannot decode image .*bob/broken\.jpg", capsys.readouterr().out
    )


def test_check_rec(tmp_path, capsys):
    folder_to_rec(identity_folder(tmp_path / "faces"), tmp_path / "rec")
    assert main(["check", str(tmp_path / "rec")]) == 0
    assert "(train.rec)" in capsys.readouterr().out
    (tmp_path / "bad").mkdir()
    with RecordWriter(tmp_path / "bad" / "train.rec") as writer:
        writer.write(0, pack(IRHeader(0, 0, 0, 0), encode_jpeg(image(1))))
        writer.write(1, pack(IRHeader(0, 1, 1, 0), b"garbage"))
        writer.write(2, pack(IRHeader(0, 1, 2, 0), encode_jpeg(image(2))))
    data = (tmp_path / "bad" / "train.rec").read_bytes()
    (tmp_path / "bad" / "train.rec").write_bytes(data[:-40])
    report = check(tmp_path / "bad")
    assert report.images_per_identity == [1, 2] and len(report.corrupt) == 2
    assert re.search(r"cannot decode image .*train\.rec@\d+", report.corrupt[0])
    assert re.search(r"train\.rec@\d+: truncated record", report.corrupt[1])


def test_cli_bad_input_exit_code(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "error: identity folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["unknown-command"])


def lfw_folder(root: Path, sizes: dict[str, int]) -> Path:
    for name, count in sizes.items():
        (root / name).mkdir(parents=True)
        for number in range(1, count + 1):
            (root / name / f"{name}_{number:04d}.jpg").write_bytes(b"")
    return root


def test_make_pairs_balanced_and_identity_disjoint(tmp_path):
    root = lfw_folder(tmp_path / "lfw", {f"Person_{index}": 1 + index % 4 for index in range(16)})
    assert main(["make-pairs", str(root), str(tmp_path / "pairs.txt"), "--folds", "2", "--pairs-per-fold", "5"]) == 0
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 20 and pairs.issame == ([True] * 5 + [False] * 5) * 2
    assert all((root / path).is_file() for path in pairs.left + pairs.right)
    assert len(set(zip(pairs.left, pairs.right, strict=True))) == 20
    fold_people = [
        {path.split("/")[0] for path in pairs.left[f * 10 : f * 10 + 10] + pairs.right[f * 10 : f * 10 + 10]}
        for f in (0, 1)
    ]
    assert not fold_people[0] & fold_people[1]
    make_pairs(root, tmp_path / "again.txt", folds=2, pairs_per_fold=5)
    assert (tmp_path / "again.txt").read_text() == (tmp_path / "pairs.txt").read_text()
    make_pairs(root, tmp_path / "other.txt", folds=2, pairs_per_fold=5, seed=1)
    assert (tmp_path / "other.txt").read_text() != (tmp_path / "pairs.txt").read_text()


def test_make_pairs_matches_real_lfw_line_format(tmp_path):
    real = SHARED / "lfw_protocol" / "pairs.txt"
    if not real.is_file():
        pytest.skip(f"real LFW protocol not available: {real} is absent")
    root = lfw_folder(tmp_path / "lfw", {f"Person_{index}": 3 for index in range(12)})
    make_pairs(root, tmp_path / "pairs.txt", folds=2, pairs_per_fold=4)
    line = re.compile(r"\d+\t\d+|[^\t]+\t\d+\t\d+|[^\t]+\t\d+\t[^\t]+\t\d+")
    for path in (real, tmp_path / "pairs.txt"):
        assert all(line.fullmatch(text) for text in path.read_text().splitlines())
    assert real.read_text().splitlines()[0] == "10\t300"


def test_make_pairs_names_with_spaces_read_back(tmp_path):
    names = ["Jean Pierre Raffarin", "Ann", "Zoë van der Berg", "Bob Smith Jr"]
    root = lfw_folder(tmp_path / "lfw", {name: 3 for name in names})
    assert main(["make-pairs", str(root), str(tmp_path / "pairs.txt"), "--folds", "1", "--pairs-per-fold", "4"]) == 0
    lines = (tmp_path / "pairs.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "1\t4" and all(line.count("\t") in (2, 3) for line in lines[1:])
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 8 and pairs.issame == [True] * 4 + [False] * 4
    assert all((root / path).is_file() for path in pairs.left + pairs.right)
    assert {path.split("/")[0] for path in pairs.left + pairs.right} <= set(names)
    assert any(" " in path for path in pairs.left + pairs.right)


def test_make_pairs_refuses_names_pairs_txt_cannot_hold(tmp_path, capsys):
    root = lfw_folder(tmp_path / "lfw", {"Ann": 2, "Bob\tSmith": 2})
    with pytest.raises(ValueError, match=r"identity name 'Bob\\tSmith' cannot be stored in pairs\.txt.*tabs"):
        make_pairs(root, tmp_path / "pairs.txt", folds=1, pairs_per_fold=1)
    assert main(["make-pairs", str(root), str(tmp_path / "pairs.txt"), "--folds", "1", "--pairs-per-fold", "1"]) == 2
    assert "cannot be stored in pairs.txt" in capsys.readouterr().err
    assert not (tmp_path / "pairs.txt").exists()


def test_make_pairs_rejects_other_file_names(tmp_path):
    root = lfw_folder(tmp_path / "lfw", {"Ann": 2})
    (root / "Ann" / "photo1.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"needs LFW file names NAME/NAME_%04d\.jpg .*found Ann/photo1\.jpg"):
        make_pairs(root, tmp_path / "pairs.txt")
    assert main(["make-pairs", str(root), str(tmp_path / "pairs.txt")]) == 2


def test_make_pairs_too_few_pairs(tmp_path):
    root = lfw_folder(tmp_path / "lfw", {"Ann": 2, "Bob": 2, "Cid": 1})
    message = r"fold 1 of 1 \(3 identities, 5 images\), same-identity: only 2 distinct pairs possible, 3 requested"
    with pytest.raises(ValueError, match=message):
        make_pairs(root, tmp_path / "pairs.txt", folds=1, pairs_per_fold=3)
    with pytest.raises(ValueError, match=r"folds and pairs per fold must be positive, got 0 and 300"):
        make_pairs(root, tmp_path / "pairs.txt", folds=0)


def test_make_pairs_balances_folds_by_capacity(tmp_path):
    root = lfw_folder(tmp_path / "lfw", {f"P{index:02d}": 2 + index % 6 for index in range(60)})
    make_pairs(root, tmp_path / "pairs.txt", folds=10, pairs_per_fold=50)
    assert (tmp_path / "pairs.txt").read_text().splitlines()[0] == "10\t50"
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 1000
    fold_people = []
    for fold in range(10):
        block = slice(100 * fold, 100 * fold + 100)
        left, right, issame = pairs.left[block], pairs.right[block], pairs.issame[block]
        assert issame == [True] * 50 + [False] * 50, f"fold {fold}"
        people = [(a.split("/")[0], b.split("/")[0]) for a, b in zip(left, right, strict=True)]
        assert all(a == b for a, b in people[:50]) and all(a != b for a, b in people[50:]), f"fold {fold}"
        assert all(a != b for a, b in zip(left, right, strict=True)), f"fold {fold}: an image paired with itself"
        assert len(set(zip(left, right, strict=True))) == 100, f"fold {fold}: repeated pair"
        fold_people.append({name for pair in people for name in pair})
    for fold, people in enumerate(fold_people):
        others = set().union(*fold_people[:fold], *fold_people[fold + 1 :])
        assert not people & others, f"fold {fold} shares identities with another fold"
