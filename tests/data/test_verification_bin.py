"""insightface .bin verification sets: the real file, Python 2/3 pickles, malicious pickles."""

import builtins
import codecs
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest

from facerec.data.decode import CorruptImageError, decode_image, encode_jpeg
from facerec.data.verification.bin import UnsafePickleError, load_verification_bin, write_verification_bin
from facerec.errors import DataFileError

SMALL_LFW = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "insightface" / "small_lfw.bin"


def jpegs(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode_jpeg(rng.integers(0, 255, (16, 12, 3), dtype=np.uint8)) for _ in range(count)]


def test_real_small_lfw():
    if not SMALL_LFW.is_file():
        pytest.skip(f"real insightface file not available: {SMALL_LFW} is absent")
    data = load_verification_bin(SMALL_LFW)
    assert len(data) == 10 and data.issame == [True] * 10
    assert len(data.images) == 20
    assert all(image.shape == (112, 112, 3) and image.dtype == np.uint8 for image in data.images)


def test_write_and_load_round_trip(tmp_path):
    buffers = jpegs(4)
    write_verification_bin(
        tmp_path / "v.bin", [buffers[0], np.frombuffer(buffers[1], np.uint8), *buffers[2:]], [True, False]
    )
    data = load_verification_bin(tmp_path / "v.bin")
    assert data.issame == [True, False]
    assert [image.shape for image in data.images] == [(16, 12, 3)] * 4


def test_protocol2_pickle_from_python3(tmp_path):
    (tmp_path / "v.bin").write_bytes(pickle.dumps((jpegs(2), [False]), protocol=2))
    assert load_verification_bin(tmp_path / "v.bin").issame == [False]


def test_python2_pickle(tmp_path):
    buffers = jpegs(2)
    strings = b"".join(b"T" + struct.pack("<i", len(buffer)) + buffer for buffer in buffers)
    data = b"\x80\x02](" + strings + b"e](\x88e\x86."
    (tmp_path / "v.bin").write_bytes(data)
    assert load_verification_bin(tmp_path / "v.bin").issame == [True]


def python2_uint8_array(data: bytes) -> bytes:
    """Protocol-2 pickle opcodes of a uint8 array holding ``data``, as Python 2 with numpy 1.x writes it.

    ``_reconstruct(ndarray, (0,), 'b')``, then ``__setstate__((1, shape, dtype, False, raw))`` with the
    dtype ``dtype('u1', 0, 1)`` of state ``(3, '|', None, None, None, -1, -1, 0)``; every ``str`` (the raw
    data included) is a Python 2 string opcode (``BINSTRING``, ``SHORT_BINSTRING``), unpickled as bytes.
    """
    size = struct.pack("<i", len(data))
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        b"(K\x01J" + size + b"\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        b"\x89T" + size + data + b"tb"
    )


def test_python2_pickle_of_numpy_arrays(tmp_path):
    buffers = jpegs(4)
    arrays = b"".join(python2_uint8_array(buffer) for buffer in buffers)
    data = b"\x80\x02](" + arrays + b"e](\x88\x89e\x86."
    bins, issame = pickle.loads(data, encoding="latin1")  # the helper writes what numpy itself reads back
    assert [array.tobytes() for array in bins] == buffers and bins[0].dtype == np.uint8 and issame == [True, False]
    (tmp_path / "v.bin").write_bytes(data)
    loaded = load_verification_bin(tmp_path / "v.bin")
    assert loaded.issame == [True, False]
    for image, buffer in zip(loaded.images, buffers, strict=True):
        np.testing.assert_array_equal(image, decode_image(buffer))


class Exploit:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    ("function", "refused"),
    [
        (os.system, r"(posix|nt)\.system"),
        (builtins.eval, r"builtins\.eval"),
        (builtins.exec, r"builtins\.exec"),
    ],
)
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, function, refused):
    marker = tmp_path / "pwned"
    code = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([Exploit(function, code)], []), protocol=4))
    with pytest.raises(UnsafePickleError, match=rf"evil\.bin: refused to load global {refused}"):
        load_verification_bin(tmp_path / "evil.bin")
    assert not marker.exists()
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)


def test_codecs_encode_only_latin1(tmp_path):
    (tmp_path / "evil.bin").write_bytes(pickle.dumps((Exploit(codecs.encode, "abc", "rot13"), []), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"_codecs\.encode with encoding 'rot13' refused"):
        load_verification_bin(tmp_path / "evil.bin")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"verification \.bin not found: .*nope\.bin"):
        load_verification_bin(tmp_path / "nope.bin")


def test_not_a_pickle(tmp_path):
    (tmp_path / "v.bin").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"v\.bin: not a readable pickle"):
        load_verification_bin(tmp_path / "v.bin")


def test_wrong_structure(tmp_path):
    (tmp_path / "v.bin").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"v\.bin: expected a pickled \(bins, issame\) pair of lists, got dict"):
        load_verification_bin(tmp_path / "v.bin")
    (tmp_path / "v.bin").write_bytes(pickle.dumps(([b"x"], 3)))
    with pytest.raises(ValueError, match=r"pair of lists, got tuple of list, int"):
        load_verification_bin(tmp_path / "v.bin")


def test_image_count_mismatch(tmp_path):
    (tmp_path / "v.bin").write_bytes(pickle.dumps((jpegs(3), [True])))
    with pytest.raises(ValueError, match=r"v\.bin: 3 images for 1 pairs; expected two images per pair"):
        load_verification_bin(tmp_path / "v.bin")
    with pytest.raises(ValueError, match=r"3 images for 1 pairs; expected two images per pair"):
        write_verification_bin(tmp_path / "w.bin", jpegs(3), [True])


def test_wrong_image_type(tmp_path):
    (tmp_path / "v.bin").write_bytes(pickle.dumps(([b"x", np.zeros(3, bool)], [True])))
    with pytest.raises(DataFileError, match=r"v\.bin\[1\]: expected JPEG bytes or a uint8 array, got a bool array"):
        load_verification_bin(tmp_path / "v.bin")
    (tmp_path / "v.bin").write_bytes(pickle.dumps(([b"x", np.zeros(3, np.float32)], [True])))
    with pytest.raises(UnsafePickleError, match=r"v\.bin: refused numpy dtype 'f4': .* only plain uint8 \('u1'\) and"):
        load_verification_bin(tmp_path / "v.bin")


def test_corrupt_image_names_its_index(tmp_path):
    write_verification_bin(tmp_path / "v.bin", [jpegs(1)[0], b"not a jpeg"], [True])
    with pytest.raises(CorruptImageError, match=r"v\.bin\[1\]"):
        load_verification_bin(tmp_path / "v.bin")


def without_frames(data: bytes) -> bytes:
    """The pickle without its (optional) FRAME opcodes, so that its strings can be edited."""
    frames = [position for opcode, _, position in pickletools.genops(data) if opcode.name == "FRAME"]
    for position in reversed(frames):
        data = data[:position] + data[position + 9 :]
    return data


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("as_arrays", [False, True], ids=["bytes", "uint8_arrays"])
def test_pickles_of_every_protocol_load(tmp_path, protocol, as_arrays):
    buffers = jpegs(4)
    bins = [np.frombuffer(buffer, np.uint8) for buffer in buffers] if as_arrays else buffers
    (tmp_path / "v.bin").write_bytes(pickle.dumps((bins, [True, False]), protocol=protocol))
    data = load_verification_bin(tmp_path / "v.bin")
    assert data.issame == [True, False]
    assert all(np.array_equal(image, decode_image(buffer)) for image, buffer in zip(data.images, buffers, strict=True))


def test_protocol5_arrays_of_numpy_1_load(tmp_path):
    buffers = jpegs(2)
    modern = without_frames(pickle.dumps(([np.frombuffer(b, np.uint8) for b in buffers], [True]), protocol=5))
    old = modern.replace(b"\x8c\x13numpy._core.numeric", b"\x8c\x12numpy.core.numeric")
    assert old != modern
    (tmp_path / "v.bin").write_bytes(old)
    assert [image.shape for image in load_verification_bin(tmp_path / "v.bin").images] == [(16, 12, 3)] * 2


def test_protocol5_object_arrays_are_refused(tmp_path):
    (tmp_path / "v.bin").write_bytes(pickle.dumps(([np.array([b"x"], dtype=object)] * 2, [True]), protocol=5))
    with pytest.raises(UnsafePickleError, match=r"v\.bin: refused numpy dtype 'O8': a verification \.bin holds only"):
        load_verification_bin(tmp_path / "v.bin")


RECONSTRUCT = np.zeros(0).__reduce__()[0]
OBJECT_FIELD_STATE = (3, "|", None, ("f",), {"f": (np.dtype("O"), 0)}, 8, 1, 0x3D)
"""``numpy.dtype.__setstate__`` state of an 8-byte structured dtype whose field ``f`` is a Python object (flags
without ``NPY_LIST_PICKLE``, so numpy takes the raw bytes as pointers)."""


class Reduce:
    """Pickles as ``function(*args)``, then BUILD with ``state`` if given: what a forged numpy pickle can hold."""

    def __init__(self, function, args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)


def forged_dtype(descr, state) -> Reduce:
    """``numpy.dtype(descr)`` given ``state`` on unpickling, as numpy's own dtype pickles do."""
    return Reduce(np.dtype, (descr, False, True), state)


def forged_array(dtype, shape, raw: bytes, fortran=False) -> Reduce:
    """An array as numpy pickles it (``_reconstruct`` then BUILD) with any dtype, shape and raw data."""
    return Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype, fortran, raw))


def object_pointer_bin(path: Path, pointer: int, descr: str = "V8") -> Path:
    """The issue's reproduction: ``issame`` is an array whose object field holds the forged pointer ``pointer``."""
    issame = forged_array(forged_dtype(descr, OBJECT_FIELD_STATE), (1,), struct.pack("<Q", pointer))
    path.write_bytes(pickle.dumps((jpegs(2), issame), protocol=2))
    return path


def test_forged_null_pointer_is_refused(tmp_path):
    with pytest.raises(UnsafePickleError, match=r"v\.bin: refused numpy dtype 'V8'"):
        load_verification_bin(object_pointer_bin(tmp_path / "v.bin", 0))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_object_issame_is_refused(tmp_path, protocol):
    (tmp_path / "v.bin").write_bytes(pickle.dumps((jpegs(2), np.array([True], dtype=object)), protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"v\.bin: refused numpy dtype 'O8'"):
        load_verification_bin(tmp_path / "v.bin")


def test_structured_dtypes_are_refused_before_an_array_is_built(tmp_path):
    (tmp_path / "v.bin").write_bytes(pickle.dumps((jpegs(2), np.zeros(1, [("a", "u1")])), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"v\.bin: refused numpy dtype 'V1'"):
        load_verification_bin(tmp_path / "v.bin")
    fields = (3, "|", None, ("a",), {"a": (np.dtype("u1"), 0)}, 1, 1, 0)
    (tmp_path / "v.bin").write_bytes(pickle.dumps((jpegs(2), forged_array(forged_dtype("b1", fields), (1,), b"\1"))))
    with pytest.raises(UnsafePickleError, match=r"v\.bin: refused numpy dtype state .* for 'b1': expected the plain"):
        load_verification_bin(tmp_path / "v.bin")


def test_array_state_must_match_its_plain_dtype(tmp_path):
    bins = [np.frombuffer(buffer, np.uint8) for buffer in jpegs(2)]
    for shape, message in [((10**12,), "needs 1000000000000 bytes"), ((-1,), "expected a tuple of non-negative")]:
        forged = forged_array(forged_dtype("b1", (3, "|", None, None, None, -1, -1, 0)), shape, b"\1")
        (tmp_path / "v.bin").write_bytes(pickle.dumps((bins, forged), protocol=2))
        with pytest.raises(UnsafePickleError, match=rf"v\.bin: refused array .*{message}"):
            load_verification_bin(tmp_path / "v.bin")


def test_issame_must_hold_bools(tmp_path):
    (tmp_path / "v.bin").write_bytes(pickle.dumps((jpegs(2), [2])))
    with pytest.raises(DataFileError, match=r"v\.bin: issame\[0\] must be a bool \(True/False or 1/0\), got int 2"):
        load_verification_bin(tmp_path / "v.bin")
    (tmp_path / "v.bin").write_bytes(pickle.dumps((jpegs(2), np.array([[True]]))))
    with pytest.raises(DataFileError, match=r"issame must be a list of bools or a 1-D bool array, got a bool array"):
        load_verification_bin(tmp_path / "v.bin")
    (tmp_path / "v.bin").write_bytes(pickle.dumps((jpegs(2), np.array([True]))))
    assert load_verification_bin(tmp_path / "v.bin").issame == [True]


def test_huge_memo_index_is_not_allocated(tmp_path):
    (tmp_path / "v.bin").write_bytes(b"\x80\x04N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b".")
    with pytest.raises(DataFileError, match=r"v\.bin: expected a pickled \(bins, issame\) pair of lists, got NoneType"):
        load_verification_bin(tmp_path / "v.bin")


def test_truncated_pickle_is_refused(tmp_path):
    write_verification_bin(tmp_path / "v.bin", jpegs(2), [True])
    (tmp_path / "v.bin").write_bytes((tmp_path / "v.bin").read_bytes()[:-30])
    with pytest.raises(DataFileError, match=r"v\.bin: not a readable pickle: UnpicklingError: truncated: wanted"):
        load_verification_bin(tmp_path / "v.bin")
