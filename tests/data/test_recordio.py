"""RecordIO reader/writer: round trips, the real MXNet golden file, and every malformed input."""

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from facerec.data.training.recordio import MAGIC, IRHeader, RecordIOError, RecordReader, RecordWriter, pack, unpack

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mxnet_recordio"
MAGIC_BYTES = struct.pack("<I", MAGIC)


@pytest.fixture
def golden() -> RecordReader:
    if not (GOLDEN / "golden.rec").is_file():
        pytest.skip(f"real MXNet golden file not available: {GOLDEN} is absent")
    return RecordReader(GOLDEN / "golden.rec")


def write(tmp_path: Path, records: dict[int, bytes]) -> RecordReader:
    with RecordWriter(tmp_path / "t.rec") as writer:
        for key, record in records.items():
            writer.write(key, record)
    return RecordReader(tmp_path / "t.rec", tmp_path / "t.idx")


def test_golden_headers_and_payloads(golden):
    assert golden.keys == list(range(8))
    header0, payload0 = unpack(golden.read(0))
    assert header0.flag == 2 and header0.label.tolist() == [7.0, 7.0] and payload0 == b""
    expected = {1: (0, 0.0, 3832), 2: (2, [0.0, 7.5], 3485), 3: (0, 1.0, 4471), 6: (2, [2.0, 7.5], 3824)}
    for key, (flag, label, size) in expected.items():
        header, payload = unpack(golden.read(key))
        assert (header.flag, header.id, len(payload)) == (flag, key, size)
        assert np.asarray(header.label).tolist() == label
        assert payload[:3] == b"\xff\xd8\xff"
        read = golden.read_header(key)
        assert (read.flag, read.id, read.class_label) == (flag, key, header.class_label)
    assert [golden.read_header(key).class_label for key in range(1, 7)] == [0, 0, 1, 1, 2, 2]


def test_golden_multipart_record(golden):
    header, payload = unpack(golden.read(7))
    assert payload == b"ABCD" + MAGIC_BYTES + b"EFGH" + MAGIC_BYTES + b"xyz"
    assert (header.flag, header.label, header.id) == (0, 99.0, 7)
    assert golden.read_header(7).class_label == 99


def test_golden_rewrite_is_byte_identical(golden, tmp_path):
    with RecordWriter(tmp_path / "copy.rec") as writer:
        for key in golden.keys:
            writer.write(key, golden.read(key))
    assert (tmp_path / "copy.rec").read_bytes() == (GOLDEN / "golden.rec").read_bytes()
    assert (tmp_path / "copy.idx").read_bytes() == (GOLDEN / "golden.idx").read_bytes()


def test_golden_repack_is_byte_identical(golden):
    for key in golden.keys:
        record = golden.read(key)
        header, payload = unpack(record)
        assert pack(header, payload) == record


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"a",
        b"abcde",
        MAGIC_BYTES,
        MAGIC_BYTES * 3,
        b"xy" + MAGIC_BYTES + b"zw",  # unaligned magic: not split
        b"abcd" + MAGIC_BYTES,
        bytes(range(256)) * 40,
    ],
)
def test_round_trip(tmp_path, payload):
    reader = write(tmp_path, {3: payload, 9: b"next"})
    assert reader.read(3) == payload and reader.read(9) == b"next"
    assert (tmp_path / "t.rec").stat().st_size % 4 == 0


def test_writer_splits_aligned_magic_like_dmlc(tmp_path):
    write(tmp_path, {0: b"abcd" + MAGIC_BYTES + b"ef"})
    data = (tmp_path / "t.rec").read_bytes()
    frames = [struct.unpack_from("<II", data, offset) for offset in (0, 12)]
    assert frames == [(MAGIC, 1 << 29 | 4), (MAGIC, 3 << 29 | 2)]
    assert data[8:12] == b"abcd" and data[20:24] == b"ef\0\0"


def test_pack_unpack_labels():
    header, payload = unpack(pack(IRHeader(0, 3.0, 5, 1), b"img"))
    assert header == IRHeader(0, 3.0, 5, 1) and payload == b"img"
    header, payload = unpack(pack(IRHeader(0, [4.0, 2.5], 6, 0), b"img"))
    assert header.flag == 2 and header.label.tolist() == [4.0, 2.5] and header.class_label == 4


def test_unpack_short_records():
    with pytest.raises(RecordIOError, match=r"src: record of 3 bytes is shorter than the 24-byte IRHeader"):
        unpack(b"abc", "src")
    with pytest.raises(RecordIOError, match=r"IRHeader announces 2 labels, the record has 28 bytes"):
        unpack(struct.pack("<IfQQ", 2, 0, 0, 0) + b"1234")


def test_reader_reopens_per_process_and_pickles(tmp_path, monkeypatch):
    reader = write(tmp_path, {0: b"abcd"})
    assert reader.read(0) == b"abcd"
    first = reader._handle
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._handle is None and clone.read(0) == b"abcd"
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert reader.read(0) == b"abcd" and reader._handle is not first
    reader.close()


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RecordIO file not found: .*nope\.rec"):
        RecordReader(tmp_path / "nope.rec")
    (tmp_path / "a.rec").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"RecordIO index not found: .*a\.idx"):
        RecordReader(tmp_path / "a.rec")


def test_index_past_end(tmp_path):
    write(tmp_path, {0: b"abcd"})
    (tmp_path / "t.idx").write_text("0\t0\n1\t400\n")
    message = r"t\.idx:2: key 1 points to offset 400, past the end of the 12-byte record file"
    with pytest.raises(RecordIOError, match=message):
        RecordReader(tmp_path / "t.rec")


def test_malformed_index_line(tmp_path):
    write(tmp_path, {0: b"abcd"})
    (tmp_path / "t.idx").write_text("0 0\n")
    with pytest.raises(RecordIOError, match=r"t\.idx:1: expected 'key<TAB>offset', got '0 0'"):
        RecordReader(tmp_path / "t.rec")


def test_wrong_magic(tmp_path):
    write(tmp_path, {0: b"abcd", 1: b"efgh"})
    (tmp_path / "t.idx").write_text("0\t0\n1\t4\n")
    with pytest.raises(RecordIOError, match=r"t\.rec@4: bad magic 0x\w{8}, expected 0xced7230a"):
        RecordReader(tmp_path / "t.rec").read(1)


def test_truncated_record(tmp_path):
    write(tmp_path, {0: b"x" * 100})
    data = (tmp_path / "t.rec").read_bytes()
    (tmp_path / "t.rec").write_bytes(data[:50])
    with pytest.raises(RecordIOError, match=r"t\.rec@0: truncated record: wanted 100 bytes at offset 8"):
        RecordReader(tmp_path / "t.rec").read(0)


def test_bad_continuation_flag(tmp_path):
    write(tmp_path, {0: b"abcd" + MAGIC_BYTES + b"ef"})
    (tmp_path / "t.idx").write_text("0\t12\n")
    with pytest.raises(RecordIOError, match=r"t\.rec@12: continuation flag 3 where \(0, 1\) was expected"):
        RecordReader(tmp_path / "t.rec").read(0)


def test_index_that_is_not_ascii_names_line_and_offset(tmp_path):
    write(tmp_path, {0: b"abc"})
    (tmp_path / "t.idx").write_bytes(b"0\t0\n1\t\xff\n")
    with pytest.raises(RecordIOError, match=r"t\.idx:2: byte 0xff at offset 6 is not ASCII; expected 'key<TAB>offset'"):
        RecordReader(tmp_path / "t.rec", tmp_path / "t.idx")
