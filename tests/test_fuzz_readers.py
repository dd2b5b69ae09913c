"""Fuzzing the readers of untrusted files: pairs.txt, insightface .bin, MXNet .rec/.idx.

Random bytes and mutations of a small valid file must give a result or one of facerec's own errors
(:class:`~facerec.errors.DataFileError` and its subclasses), never another exception, a crash or a hang.
The forged-dtype cases of ``.bin`` (which segfaulted) run in a child process, so that a crash is a failure
here rather than the end of pytest.
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from facerec.data.decode import encode_jpeg
from facerec.data.training.rec_dataset import RecordDataset
from facerec.data.training.recordio import MAGIC, IRHeader, RecordReader, RecordWriter, pack, unpack
from facerec.data.verification.bin import load_verification_bin, write_verification_bin
from facerec.data.verification.pairs import read_pairs
from facerec.errors import DataFileError
from tests.data.test_verification_bin import OBJECT_FIELD_STATE, forged_array, forged_dtype, object_pointer_bin
from tests.fuzz import FUZZ, fuzzed
from tests.helpers import run_process

JPEGS = [encode_jpeg(np.full((8, 8, 3), value, np.uint8)) for value in (40, 200)]
PLAIN_STATE = (3, "|", None, None, None, -1, -1, 0)

PAIRS = "2\t1\nAnn Lee\t1\t2\nBob\t1\tCé\t3\nDan\t2\t4\nEve\t1\tFay\t2\n".encode()


@given(data=fuzzed(PAIRS))
@FUZZ
def test_pairs_reader_raises_only_data_file_errors(tmp_path, data):
    (tmp_path / "pairs.txt").write_bytes(data)
    try:
        pairs = read_pairs(tmp_path / "pairs.txt")
    except DataFileError:
        return
    assert len(pairs.left) == len(pairs.right) == len(pairs)


def bin_seeds(tmp_path: Path) -> list[bytes]:
    """Valid two-pair ``.bin`` files: bytes (protocol 4), uint8 arrays (protocols 2 and 5), a bool-array issame."""
    write_verification_bin(tmp_path / "seed.bin", JPEGS * 2, [True, False])
    arrays = [np.frombuffer(buffer, np.uint8).reshape(-1, 1) for buffer in JPEGS * 2]
    return [
        (tmp_path / "seed.bin").read_bytes(),
        pickle.dumps((arrays, [True, False]), protocol=2),
        pickle.dumps((arrays, np.array([False, True])), protocol=5),
    ]


@pytest.mark.parametrize("seed", range(3))
def test_bin_reader_raises_only_data_file_errors(tmp_path, seed):
    @given(data=fuzzed(bin_seeds(tmp_path)[seed]))
    @FUZZ
    def check(data):
        (tmp_path / "v.bin").write_bytes(data)
        try:
            result = load_verification_bin(tmp_path / "v.bin")
        except DataFileError:
            return
        assert len(result.images) == 2 * len(result.issame)
        assert all(type(flag) is bool for flag in result.issame)

    check()


def rec_seed(root: Path) -> Path:
    """An insightface ``train.rec``: header record, two images, two identity records (one split at a magic word)."""
    root.mkdir()
    records = {
        0: pack(IRHeader(2, [3, 5], 0, 0), b""),
        1: pack(IRHeader(0, 0, 1, 0), JPEGS[0]),
        2: pack(IRHeader(0, 1, 2, 0), JPEGS[1]),
        3: pack(IRHeader(2, [1, 2], 3, 0), b""),
        4: pack(IRHeader(2, [2, 3], 4, 0), b"abcd" + struct.pack("<I", MAGIC) + b"efg"),
    }
    with RecordWriter(root / "train.rec") as writer:
        for key, record in records.items():
            writer.write(key, record)
    return root


def read_everything(root: Path) -> None:
    """Every record, header and payload of ``root/train.rec`` through the reader, then the dataset's images."""
    reader = RecordReader(root / "train.rec")
    try:
        for key in reader.keys:
            unpack(reader.read(key), reader.source(key))
            reader.read_header(key)
    finally:
        reader.close()
    dataset = RecordDataset(root)
    try:
        for index in range(len(dataset.labels)):
            dataset.load(index)
    finally:
        dataset.reader.close()
    assert all(0 <= label < dataset.num_classes for label in dataset.labels)


@pytest.mark.parametrize("name", ["train.rec", "train.idx"])
def test_recordio_reader_raises_only_data_file_errors(tmp_path, name):
    root = rec_seed(tmp_path / "seed")
    read_everything(root)

    @given(data=fuzzed((root / name).read_bytes()))
    @FUZZ
    def check(data):
        (root / name).write_bytes(data)
        with contextlib.suppress(DataFileError):
            read_everything(root)

    check()


LABELS = st.lists(st.floats(width=32), min_size=1, max_size=3)


@given(header=st.none() | LABELS, labels=st.lists(LABELS, min_size=1, max_size=3))
@FUZZ
def test_record_labels_of_any_float32_value(tmp_path, header, labels):
    """Header-record ranges and class labels of any float32 (NaN, inf, 3e38, -0.5): a dataset or a DataFileError."""
    records = {} if header is None else {0: pack(IRHeader(len(header), header, 0, 0), b"")}
    for key, label in enumerate(labels, start=1):
        records[key] = pack(
            IRHeader(0, label[0], key, 0) if len(label) == 1 else IRHeader(len(label), label, key, 0), JPEGS[0]
        )
    with RecordWriter(tmp_path / "train.rec") as writer:
        for key, record in records.items():
            writer.write(key, record)
    with contextlib.suppress(DataFileError):
        read_everything(tmp_path)


DESCRS = st.one_of(
    st.sampled_from(["u1", "b1", b"u1", "V8", "V1", "O", "O8", "i1", "f4", "S1", "U1", "<u2", "u1,u1", "M8[s]", ""]),
    st.text(max_size=4),
)
FIELD_DTYPES = st.builds(forged_dtype, st.sampled_from(["u1", "O", "b1", "V8"]), st.just(PLAIN_STATE))
DTYPE_STATES = st.one_of(
    st.just(PLAIN_STATE),
    st.just(OBJECT_FIELD_STATE),
    st.tuples(
        st.sampled_from([3, 4, 2]),
        st.sampled_from(["|", "<", ">", "=", b"|"]),
        st.none() | st.tuples(FIELD_DTYPES, st.tuples(st.integers(0, 3))),
        st.none() | st.lists(st.text(max_size=2), max_size=2).map(tuple),
        st.none() | st.dictionaries(st.text(max_size=2), st.tuples(FIELD_DTYPES, st.integers(-8, 16)), max_size=2),
        st.sampled_from([-1, 0, 1, 8, 2**31]),
        st.sampled_from([-1, 1, 8]),
        st.integers(0, 0x7F),
    ),
    st.lists(st.integers(-1, 3), max_size=9).map(tuple),
)
FORGED_ARRAYS = st.builds(
    forged_array,
    st.builds(forged_dtype, DESCRS, DTYPE_STATES),
    st.lists(st.integers(0, 9), max_size=3).map(tuple) | st.just((-1,)),
    st.binary(max_size=24),
    st.booleans(),
)


@given(array=FORGED_ARRAYS, as_issame=st.booleans(), protocol=st.sampled_from([2, 4]))
@FUZZ
def fuzz_dtype_states(directory: Path, array, as_issame: bool, protocol: int) -> None:
    """Child process: a forged array as ``issame`` or as an image loads as plain data or is a DataFileError."""
    content = (list(JPEGS), array) if as_issame else ([array, JPEGS[0]], [True])
    (directory / "forged.bin").write_bytes(pickle.dumps(content, protocol=protocol))
    try:
        result = load_verification_bin(directory / "forged.bin")
    except DataFileError:
        return
    assert all(type(flag) is bool for flag in result.issame)


def forged_dtypes_child(directory: str) -> None:
    """Child process: loads each reproduction file (one line per outcome), then runs :func:`fuzz_dtype_states`."""
    for path in sorted(Path(directory).glob("*.bin")):
        try:
            load_verification_bin(path)
            print(f"{path.name}: loaded", flush=True)
        except Exception as error:  # the test checks the type: only facerec's own is right
            print(f"{path.name}: {type(error).__name__}: {error}", flush=True)
    fuzz_dtype_states(Path(directory))
    print("fuzz: passed", flush=True)


@pytest.fixture(scope="module")
def forged_dtypes_run(tmp_path_factory) -> subprocess.CompletedProcess:
    """One child process for the forged-pointer reproductions and the dtype-state fuzz (a crash is a result)."""
    directory = tmp_path_factory.mktemp("forged")
    object_pointer_bin(directory / "pointer.bin", 0x4141414141414141)
    object_pointer_bin(directory / "null_pointer.bin", 0)
    object_pointer_bin(directory / "plain_descr.bin", 0x4141414141414141, descr="u1")
    script = f"from tests.test_fuzz_readers import forged_dtypes_child; forged_dtypes_child({str(directory)!r})"
    return run_process([sys.executable, "-X", "faulthandler", "-c", script], timeout=300, check=False)


def outcome(run: subprocess.CompletedProcess) -> str:
    died = f"died of signal {-run.returncode}" if run.returncode < 0 else f"exited {run.returncode}"
    return f"the child process {died}\nstdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-5000:]}"


@pytest.mark.slow
def test_forged_object_pointer_bin_is_a_clean_error_not_a_segfault(forged_dtypes_run):
    lines = dict(line.split(": ", 1) for line in forged_dtypes_run.stdout.splitlines() if ".bin: " in line)
    assert set(lines) == {"null_pointer.bin", "plain_descr.bin", "pointer.bin"}, outcome(forged_dtypes_run)
    assert lines["pointer.bin"].startswith("UnsafePickleError: ") and "refused numpy dtype 'V8'" in lines["pointer.bin"]
    assert lines["null_pointer.bin"].startswith("UnsafePickleError: ") and "dtype 'V8'" in lines["null_pointer.bin"]
    assert lines["plain_descr.bin"].startswith("UnsafePickleError: ") and "dtype 'O8'" in lines["plain_descr.bin"]


@pytest.mark.slow
def test_fuzzed_dtype_states_are_plain_data_or_data_file_errors(forged_dtypes_run):
    assert forged_dtypes_run.returncode == 0 and "fuzz: passed" in forged_dtypes_run.stdout, outcome(forged_dtypes_run)
