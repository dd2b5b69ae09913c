"""Identity folders, pairs files, verification sets and the datamodule's errors."""

from __future__ import annotations

import logging
import unicodedata

import pytest

from facerec.callbacks import VerificationCallback
from facerec.data import FaceDataModule, load_pairs_set
from facerec.data.decode import CorruptImageError, ImageSizeError
from facerec.data.training.folder import IdentityFolderDataset, scan_identity_folder
from facerec.data.verification.pairs import read_pairs
from facerec.errors import DataFileError
from tests.helpers import shared_file, write_image


@pytest.fixture
def identity_folder(tmp_path):
    root = tmp_path / "train"
    write_image(root / "bob" / "1.jpg")
    write_image(root / "bob" / "nested" / "2.JPG")
    write_image(root / "alice" / "a.jpg", 10)
    (root / "alice" / "notes.txt").write_text("not an image")
    (root / "carol").mkdir()
    return root


def test_labels_come_from_sorted_folders_and_junk_is_skipped(identity_folder):
    index = scan_identity_folder(identity_folder)
    assert index.class_names == ["alice", "bob"]
    assert index.labels == [0, 1, 1]
    assert index.empty_identities == ["carol"]
    assert [p.name for p in index.skipped_files] == ["notes.txt"]
    assert index.summary() == "2 identities, 3 images; skipped 1 empty identity folders and 1 non-image files"


def test_missing_or_empty_training_folder_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="identity folder not found"):
        scan_identity_folder(tmp_path / "nope")
    (tmp_path / "empty" / "someone").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found under"):
        scan_identity_folder(tmp_path / "empty")


def test_corrupt_image_names_the_file_or_is_replaced(identity_folder, caplog):
    (identity_folder / "bob" / "1.jpg").write_bytes(b"garbage")
    write_image(identity_folder / "bob" / "nested" / "2.JPG", 200)
    with pytest.raises(CorruptImageError, match="bob/1.jpg"):
        IdentityFolderDataset(identity_folder)[1]
    dataset = IdentityFolderDataset(identity_folder, skip_corrupt=True)
    with caplog.at_level(logging.WARNING):
        image, label = dataset[1]
    assert label == 1 and image.shape == (8, 8, 3)
    assert abs(image.mean() - 200) < 3, "the replacement must be bob's other image, not alice's (10)"
    [warning] = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.startswith("skipping corrupt image: ") and str(identity_folder / "bob" / "1.jpg") in warning
    assert warning.endswith("using sample 2 of the same identity")
    (identity_folder / "bob" / "nested" / "2.JPG").write_bytes(b"garbage")
    with pytest.raises(CorruptImageError, match="every image of identity 'bob' is corrupt"):
        dataset[1]


def test_corrupt_training_image_error_says_how_to_fix(tmp_path):
    root = tmp_path / "my faces"
    for index in range(6):
        write_image(root / f"person{index}" / "0.jpg")
    (root / "person4" / "1.jpg").write_bytes(b"\xff\xd8\xfftruncated")
    dataset = IdentityFolderDataset(root)
    assert [dataset[i][1] for i in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(CorruptImageError) as error:
        dataset[5]
    message = str(error.value)
    assert f"cannot decode image {root / 'person4' / '1.jpg'}" in message
    assert f"python -m facerec.data check '{root}'" in message and "data.skip_corrupt=true" in message


def test_lfw_pairs_file_keeps_fold_order():
    pairs = read_pairs(shared_file("lfw_protocol/pairs.txt"))
    assert len(pairs) == 6000
    assert pairs.issame[:300] == [True] * 300 and pairs.issame[300:600] == [False] * 300
    assert pairs.left[0] == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert read_pairs(shared_file("lfw_protocol/pairsDevTest.txt")).issame.count(True) == 500


def test_malformed_pairs_file_names_the_line(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("1\t1\nbob\t1\t2\nbob\tx\n")
    with pytest.raises(ValueError, match=r"pairs.txt:3: malformed pair line"):
        read_pairs(path)
    path.write_text("1\t2\nbob\t1\t2\nbob\t1\tann\t2\n")
    with pytest.raises(ValueError, match="promises 4 pairs, found 2"):
        read_pairs(path)


def test_pairs_file_that_is_not_utf8_or_has_huge_numbers_is_a_data_file_error(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_bytes(b"1\t1\nbob\t1\t2\nJos\xe9\t1\tann\t2\n")
    with pytest.raises(DataFileError, match=r"pairs\.txt:3: byte 0xe9 at offset 15 is not UTF-8; a pairs file is"):
        read_pairs(path)
    path.write_text("1\t" + "9" * 5000 + "\n")
    with pytest.raises(DataFileError, match=r"pairs\.txt:1: header must be .*positive integers of at most 9 digits"):
        read_pairs(path)
    path.write_text("1\t1\nbob\t1\t" + "2" * 5000 + "\nbob\t1\tann\t2\n")
    with pytest.raises(
        DataFileError, match=r"pairs\.txt:2: malformed pair line .*integer n1 and n2 of at most 9 digits"
    ):
        read_pairs(path)


def test_pairs_line_is_checked_against_the_kind_its_position_calls_for(tmp_path):
    images = tmp_path / "images"
    for name, number in (("bob", 1), ("bob", 2), ("ann", 1)):
        write_image(images / name / f"{name}_{number:04d}.jpg")
    path = tmp_path / "pairs.txt"
    path.write_text("1\t1\nbob\t1\t2\t3\nbob\t1\tann\t1\n")  # a same-person line with a column too many
    message = (
        r"pairs\.txt:2: malformed pair line 'bob\\t1\\t2\\t3': expected a same-person line .*3 columns.* "
        r"for fold 1 of 1, same-person pair 1 of 1, got 4 columns"
    )
    with pytest.raises(ValueError, match=message):
        read_pairs(path)
    with pytest.raises(ValueError, match=message):  # not "images ... are missing"
        load_pairs_set("lfw", path, images)
    path.write_text("1\t1\nbob\t1\t2\nbob\t1\t2\n")  # a same-person line where a different-person one belongs
    with pytest.raises(ValueError, match=r"pairs\.txt:3: .*expected a different-person line .*got 3 columns"):
        read_pairs(path)
    path.write_text("1\t1\nbob\tone\t2\nbob\t1\tann\t1\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:2: .*integer n1 and n2"):
        read_pairs(path)
    path.write_text("1 1\nJean Pierre 1 2\nbob 1 ann 1\n")  # a name with spaces without tabs
    with pytest.raises(ValueError, match=r"pairs\.txt:2: .*got 4 columns.*a name with spaces needs tab-separated"):
        read_pairs(path)


def test_pairs_header_folds_are_the_folds_used(tmp_path):
    path = tmp_path / "pairs.txt"
    lines = ["5\t2"]
    for fold in range(5):
        lines += [f"p{fold}\t1\t2", f"p{fold}\t2\t3", f"p{fold}\t1\tq{fold}\t1", f"p{fold}\t3\tq{fold}\t2"]
    path.write_text("\n".join(lines) + "\n")
    assert read_pairs(path).folds == 5 and len(read_pairs(path)) == 20
    images = tmp_path / "images"
    for fold in range(5):
        for name, numbers in ((f"p{fold}", (1, 2, 3)), (f"q{fold}", (1, 2))):
            for number in numbers:
                write_image(images / name / f"{name}_{number:04d}.jpg", value=40 * fold)
    val_set = load_pairs_set("five", path, images)
    assert val_set.folds == 5
    assert VerificationCallback(n_folds=10, roc_plots=False).metric_for(val_set).n_folds == 5
    with pytest.raises(ValueError, match=r"header '5\\t2' promises 20 pairs, found 19 \(5 folds of 2 same then 2"):
        path.write_text("\n".join(lines[:-1]) + "\n")
        read_pairs(path)


def test_pairs_file_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("\ufeff1\t1\nJosé\t1\t2\nJosé\t1\tZoë\t1\n", encoding="utf-8")
    pairs = read_pairs(path)
    assert pairs.left == ["José/José_0001.jpg", "José/José_0001.jpg"] and pairs.folds == 1
    assert pairs.right == ["José/José_0002.jpg", "Zoë/Zoë_0001.jpg"] and pairs.issame == [True, False]


def test_missing_pair_image_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "pairs.txt").write_text("1\t1\nbob\t1\t2\nbob\t1\tann\t1\n")
    write_image(tmp_path / "images" / "bob" / "bob_0001.jpg")
    write_image(tmp_path / "images" / "bob" / "bob_0002.jpg")
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* missing \(e.g. .*ann/ann_0001.jpg\)"):
        load_pairs_set("lfw", tmp_path / "pairs.txt", tmp_path / "images")
    write_image(tmp_path / "images" / "ann" / "ann_0001.jpg")
    val_set = load_pairs_set("lfw", tmp_path / "pairs.txt", tmp_path / "images")
    assert val_set.pairs.tolist() == [[0, 1], [0, 2]] and val_set.issame.tolist() == [True, False]


def test_unreadable_or_wrongly_sized_pair_image_names_the_file(tmp_path):
    (tmp_path / "pairs.txt").write_text("1\t1\nbob\t1\t2\nbob\t1\tann\t1\n")
    for name in ("bob/bob_0001.jpg", "bob/bob_0002.jpg", "ann/ann_0001.jpg"):
        write_image(tmp_path / "images" / name, size=16)
    val_sets = {"lfw": {"pairs": str(tmp_path / "pairs.txt"), "images": str(tmp_path / "images")}}
    strict = FaceDataModule(val_sets=val_sets, image_size=(8, 8), strict_size=True, num_workers=0)
    strict.setup("validate")
    with pytest.raises(ImageSizeError, match=r"bob/bob_0001\.jpg is 16x16 \(HxW\), .*data.image_size 8x8"):
        next(iter(strict.val_dataloader()[0]))
    (tmp_path / "images" / "ann" / "ann_0001.jpg").write_bytes(b"\xff\xd8\xfftruncated")
    datamodule = FaceDataModule(val_sets=val_sets, image_size=(8, 8), eval_batch_size=2, num_workers=0)
    datamodule.setup("validate")
    (loader,) = datamodule.val_dataloader()
    iterator = iter(loader)
    images, _ = next(iterator)
    assert images.shape == (2, 3, 8, 8)
    with pytest.raises(CorruptImageError, match=r"cannot decode image .*ann/ann_0001\.jpg"):
        next(iterator)


def test_datamodule_batches_and_classes(identity_folder):
    datamodule = FaceDataModule(root=str(identity_folder), image_size=(16, 16), batch_size=2, num_workers=0)
    assert datamodule.num_classes == 2
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (2, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert labels.dtype.is_floating_point is False


def test_training_without_root_is_explained():
    with pytest.raises(ValueError, match="training needs data.root"):
        FaceDataModule(root=None).setup("fit")


def test_identity_names_are_unicode_nfc_and_nfc_twins_are_refused(tmp_path):
    composed, decomposed = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    write_image(tmp_path / "a" / decomposed / "1.jpg")
    write_image(tmp_path / "a" / "Ann" / "1.jpg")
    assert scan_identity_folder(tmp_path / "a").class_names == ["Ann", composed]
    write_image(tmp_path / "a" / composed / "1.jpg")
    with pytest.raises(ValueError, match="two identity folders are both named 'José'.*merge them"):
        scan_identity_folder(tmp_path / "a")
