"""Fuzzing the untrusted-file readers: IJB meta files, landmark files, ONNX sidecars.

Each reader gets random bytes and mutations (byte flips, insertions of random or tricky bytes, deletions,
truncations, repeated lines) of a small valid file the test writes. Whatever the input, a reader returns a
well-formed result or raises facerec's own error (:class:`TextFileError`, :class:`OnnxModelError`), never
anything else.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facerec.data.align import read_landmarks
from facerec.data.protocols.ijb import load_ijb
from facerec.data.protocols.ijb_meta import read_template_media, read_template_pairs
from facerec.data.text import TextFileError
from facerec.inference import OnnxModelError, read_sidecar
from tests.fuzz import FUZZ as BASE_FUZZ

FUZZ = settings(BASE_FUZZ, max_examples=300)

FACE = "38.29 51.70 73.53 51.50 56.03 71.74 41.55 92.37 70.73 92.20"
VALID = {
    "face_tid_mid": b"1.jpg 1 10\n2.jpg 1 10\n3.jpg 2 20\n4.jpg 3 30\n",
    "template_pair_label": b"1 2 0\n1 3 0\n2 3 1\n",
    "name_5pts_score": f"1.jpg {FACE} 0.9\n2.jpg {FACE} 0.8\n3.jpg {FACE} 0.7\n4.jpg {FACE} 1\n".encode(),
    "sidecar": json.dumps(
        {"input_size": [112, 112], "crop": [0, 0, 100, 90], "flip": True, "embedding_size": 512, "threshold": None}
    ).encode(),
}
TRICKY = [
    b"\x00", b"\n", b"\r", b"\r\n", b"\t", b" ", b"\xef\xbb\xbf", b"\xff", b"\xe9", b"\xc3", b"-", b"+", b".",
    b"0", b"-1", b"1e300", b"1e999", b"nan", b"inf", b"99999999999999999999", b"0x10", b"\xe2\x80\xa8", b"\x85",
    b"[", b"{", b'"', b"null", b"true", b"NaN", b"-Infinity", b"[" * 2000,
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` after 1-4 random edits: flip, insert (random or tricky bytes), delete, truncate, repeat a line."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "insert", "tricky", "delete", "truncate", "repeat"]))
        if edit == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "tricky":
            data[at:at] = draw(st.sampled_from(TRICKY))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 12))]
        elif edit == "truncate":
            del data[at:]
        elif edit == "repeat":
            lines = bytes(data).split(b"\n")
            line = lines[draw(st.integers(0, len(lines) - 1))]
            data = bytearray(b"\n".join([*lines, line]))
    return bytes(data)


def inputs(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=200), mutated(VALID[kind]))


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@FUZZ
@given(data=inputs("face_tid_mid"))
def test_fuzz_face_tid_mid(folder, data):
    try:
        names, templates, medias = read_template_media(write(folder, "ijbc_face_tid_mid.txt", data))
    except TextFileError:
        return
    assert len(names) == len(set(names)) == len(templates) == len(medias) > 0
    assert templates.dtype == medias.dtype == np.int64 and all(isinstance(name, str) and name for name in names)


@FUZZ
@given(data=inputs("template_pair_label"))
def test_fuzz_template_pair_label(folder, data):
    try:
        template1, template2, labels = read_template_pairs(write(folder, "ijbc_template_pair_label.txt", data))
    except TextFileError:
        return
    assert len(template1) == len(template2) == len(labels) > 0
    assert template1.dtype == labels.dtype == np.int64 and set(labels.tolist()) <= {0, 1}


@FUZZ
@given(data=inputs("name_5pts_score"))
def test_fuzz_landmark_file(folder, data):
    try:
        rows = read_landmarks(write(folder, "ijbc_name_5pts_score.txt", data))
    except TextFileError:
        return
    assert rows and all(row.landmarks.shape == (5, 2) and np.isfinite(row.landmarks).all() for row in rows)
    assert all(row.score is None or math.isfinite(row.score) for row in rows)


@FUZZ
@given(data=inputs("sidecar"))
def test_fuzz_sidecar(folder, data):
    write(folder, "net.json", data)
    try:
        sidecar = read_sidecar(folder / "net.onnx")
    except OnnxModelError:
        return
    assert isinstance(sidecar["flip"], bool) and len(sidecar["input_size"]) == 2


@settings(FUZZ, max_examples=150)
@given(kind=st.sampled_from(["face_tid_mid", "template_pair_label", "name_5pts_score"]), data=st.data())
def test_fuzz_load_ijb_with_one_mutated_file(folder, kind, data):
    root = folder / "IJBC"
    (root / "loose_crop").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(exist_ok=True)
    for name in ("face_tid_mid", "template_pair_label", "name_5pts_score"):
        write(root / "meta", f"ijbc_{name}.txt", VALID[name])
    write(root / "meta", f"ijbc_{kind}.txt", data.draw(mutated(VALID[kind])))
    try:
        protocol = load_ijb(root)
    except TextFileError:
        return
    assert len(protocol.images) == len(protocol.landmarks) == len(protocol.scores) and (protocol.scores > 0).all()
    assert (
        np.isin(protocol.template1, protocol.templates).all() and np.isin(protocol.template2, protocol.templates).all()
    )
