"""RecordDataset over insightface and plain im2rec files, corrupt images, DataLoader workers."""

import logging
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from facerec.data.decode import CorruptImageError, encode_jpeg
from facerec.data.training.rec_dataset import RecordDataset
from facerec.data.training.recordio import IRHeader, RecordIOError, RecordWriter, pack

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mxnet_recordio"


def jpeg(value: int) -> bytes:
    return encode_jpeg(np.full((8, 6, 3), value, dtype=np.uint8))


def write_rec(root: Path, records: dict[int, tuple[IRHeader, bytes]]) -> Path:
    root.mkdir(exist_ok=True)
    with RecordWriter(root / "train.rec") as writer:
        for key, (header, payload) in records.items():
            writer.write(key, pack(header, payload))
    return root


def insightface_rec(root: Path, images: list[tuple[int, bytes]], classes: int) -> Path:
    count = len(images)
    records = {0: (IRHeader(2, [count + 1, count + 1 + classes], 0, 0), b"")}
    records |= {key: (IRHeader(0, label, key, 0), data) for key, (label, data) in enumerate(images, start=1)}
    records |= {count + 1 + c: (IRHeader(2, [1, 1], count + 1 + c, 0), b"") for c in range(classes)}
    return write_rec(root, records)


def test_golden_insightface_layout(tmp_path):
    if not (GOLDEN / "golden.rec").is_file():
        pytest.skip(f"real MXNet golden file not available: {GOLDEN} is absent")
    (tmp_path / "train.rec").symlink_to(GOLDEN / "golden.rec")
    (tmp_path / "train.idx").symlink_to(GOLDEN / "golden.idx")
    dataset = RecordDataset(tmp_path)
    assert len(dataset) == 6 and dataset.labels == [0, 0, 1, 1, 2, 2]
    assert dataset.num_classes == 3 and dataset.class_names == ["0", "1", "2"]
    image, label = dataset[2]
    assert image.shape == (112, 112, 3) and image.dtype == np.uint8 and label == 1


def test_identity_records_are_not_images_and_count_classes(tmp_path):
    root = insightface_rec(tmp_path / "r", [(0, jpeg(10)), (1, jpeg(20))], classes=4)
    dataset = RecordDataset(root, transform=lambda image: {"image": image[0, 0, 0]})
    assert len(dataset) == 2 and dataset.num_classes == 4
    assert dataset[1] == (20, 1)


def test_header_with_a_single_label(tmp_path):
    root = write_rec(tmp_path / "r", {0: (IRHeader(0, [2], 0, 0), b""), 1: (IRHeader(0, 3, 1, 0), jpeg(1))})
    dataset = RecordDataset(root)
    assert len(dataset) == 1 and dataset.num_classes == 4


def test_plain_im2rec_file(tmp_path):
    root = write_rec(tmp_path / "r", {key: (IRHeader(0, key % 2, key, 0), jpeg(key)) for key in range(4)})
    dataset = RecordDataset(root)
    assert len(dataset) == 4 and dataset.labels == [0, 1, 0, 1] and dataset.num_classes == 2
    assert dataset[3][0].shape == (8, 6, 3)


def test_im2rec_pack_label_file(tmp_path):
    records = {key: (IRHeader(0, [key % 2, 0.5], key, 0), jpeg(key)) for key in range(3)}
    dataset = RecordDataset(write_rec(tmp_path / "r", records))
    assert len(dataset) == 3 and dataset.labels == [0, 1, 0]


def test_corrupt_image_raises_with_source(tmp_path):
    root = insightface_rec(tmp_path / "r", [(0, jpeg(10)), (0, b"garbage")], classes=1)
    with pytest.raises(CorruptImageError, match=r"cannot decode image .*train\.rec@\d+ \(7 bytes\)"):
        RecordDataset(root)[1]


def test_corrupt_image_error_says_how_to_fix(tmp_path):
    root = insightface_rec(tmp_path / "r", [(0, jpeg(10)), (0, jpeg(20)), (1, b"garbage")], classes=2)
    with pytest.raises(CorruptImageError) as error:
        RecordDataset(root)[2]
    message = str(error.value)
    assert re.search(r"cannot decode image .*train\.rec@\d+ \(7 bytes\).* \(sample 2, record key 3\)", message)
    assert f"python -m facerec.data check {shlex.quote(str(root))}" in message and "data.skip_corrupt=true" in message


def test_skip_corrupt_returns_same_identity(tmp_path, caplog):
    images = [(0, jpeg(10)), (1, jpeg(50)), (0, b"garbage"), (0, b"junk"), (1, b"bad")]
    dataset = RecordDataset(insightface_rec(tmp_path / "r", images, classes=2), skip_corrupt=True)
    with caplog.at_level(logging.WARNING):
        image, label = dataset[2]
    assert label == 0 and image[0, 0, 0] == 10
    assert "skipping corrupt image" in caplog.text and "train.rec@" in caplog.text
    image, label = dataset[4]
    assert label == 1 and image[0, 0, 0] == 50


def test_skip_corrupt_with_no_valid_image_of_the_class(tmp_path):
    images = [(0, jpeg(10)), (1, b"garbage"), (1, b"junk")]
    dataset = RecordDataset(insightface_rec(tmp_path / "r", images, classes=2), skip_corrupt=True)
    with pytest.raises(CorruptImageError, match=r"every image of identity '1' is corrupt .*can replace sample 1"):
        dataset[1]


def test_header_announces_missing_keys(tmp_path):
    root = write_rec(tmp_path / "r", {0: (IRHeader(2, [5, 5], 0, 0), b""), 1: (IRHeader(0, 0, 1, 0), jpeg(1))})
    with pytest.raises(ValueError, match=r"train\.idx: header record 0 announces image keys 1\.\.4, but 3 are"):
        RecordDataset(root)


def test_negative_label(tmp_path):
    root = write_rec(tmp_path / "r", {1: (IRHeader(0, -1, 1, 0), jpeg(1))})
    with pytest.raises(ValueError, match=r"train\.rec: negative class label -1"):
        RecordDataset(root)


def test_missing_rec(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RecordIO file not found: .*train\.rec"):
        RecordDataset(tmp_path)


def test_dataloader_workers(tmp_path):
    torch = pytest.importorskip("torch")
    images = [(index % 3, jpeg(index)) for index in range(12)]
    dataset = RecordDataset(
        insightface_rec(tmp_path / "r", images, classes=3), transform=lambda image: {"image": image[0, 0, 0]}
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    labels = [label for _, batch in loader for label in batch.tolist()]
    assert labels == [index % 3 for index in range(12)]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (float("nan"), "class label nan .*is not an integer in"),
        (float("inf"), "class label inf .*is not an integer in"),
        (1.5, "class label 1.5 .*is not an integer in"),
        (2.0**24, r"class label 1\.67772e\+07 \(record key 2, .*train\.rec@\d+\) is not an integer in \[0, 16777216\)"),
    ],
)
def test_class_label_must_be_a_float32_exact_integer(tmp_path, label, message):
    root = write_rec(tmp_path / "r", {1: (IRHeader(0, 0, 1, 0), jpeg(1)), 2: (IRHeader(2, [label, 0], 2, 0), jpeg(2))})
    with pytest.raises(RecordIOError, match=rf"train\.rec: {message}"):
        RecordDataset(root)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ([float("nan"), 3], r"has label \(nan, 3\); expected integers 1 <= a <= b"),
        ([2.5, 3], r"has label \(2\.5, 3\); expected integers 1 <= a <= b"),
        ([3, 2], r"has label \(3, 2\); expected integers 1 <= a <= b"),
        ([2, 9], r"announces identity records 2\.\.8, past the 2 keys of the index"),
        ([3e38, 3e38], r"announces image keys 1\.\.\d+, but \d+ are missing from the index \(first: 2\)"),
    ],
)
def test_header_record_label_must_fit_the_index(tmp_path, label, message):
    root = write_rec(tmp_path / "r", {0: (IRHeader(2, label, 0, 0), b""), 1: (IRHeader(0, 0, 1, 0), jpeg(1))})
    with pytest.raises(RecordIOError, match=rf"train\.(rec@0|idx): header record 0 {message}"):
        RecordDataset(root)
