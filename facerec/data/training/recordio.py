"""Pure-Python MXNet RecordIO (``.rec`` + ``.idx``) reader and writer, framed as dmlc-core's ``RecordIOWriter``.

``.idx``: one ``key<TAB>offset`` line per record. Records start with an ``IRHeader`` (``<IfQQ``).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from facerec.data.text import decode_text
from facerec.errors import DataFileError

# Frame per part: uint32 MAGIC, uint32 lrecord (low 29 bits: length; high 3: continuation flag), the bytes;
# zero padding to 4 bytes after the last part. Payloads split at 4-byte-aligned magic words (word dropped).
MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_IR = struct.Struct("<IfQQ")
_MAX_PART = (1 << 29) - 1
_WHOLE, _START, _MIDDLE, _END = 0, 1, 2, 3


class RecordIOError(DataFileError):
    """A malformed ``.rec`` or ``.idx`` file; the message names the file and offset."""


class IRHeader(NamedTuple):
    """MXNet's image record header: ``flag`` 0 (scalar ``label``) or the count of float32 labels that follow;
    ``id`` (MXNet stores the key), ``id2`` (usually 0).
    """

    flag: int
    label: float | np.ndarray
    id: int
    id2: int

    @property
    def class_label(self) -> int:
        """The label, or the first of several."""
        return int(self.label) if self.flag == 0 else int(self.label[0])


def pack(header: IRHeader, payload: bytes) -> bytes:
    """``header`` + ``payload`` as ``mxnet.recordio.pack`` writes them (a label sequence follows the header)."""
    if np.isscalar(header.label):
        return _IR.pack(0, float(header.label), header.id, header.id2) + payload
    labels = np.asarray(header.label, dtype="<f4").reshape(-1)
    return _IR.pack(labels.size, 0.0, header.id, header.id2) + labels.tobytes() + payload


def unpack(record: bytes, source: str = "<record>") -> tuple[IRHeader, bytes]:
    """``(IRHeader, payload)`` as ``mxnet.recordio.unpack``; RecordIOError if shorter than header and labels."""
    if len(record) < _IR.size:
        raise RecordIOError(f"{source}: record of {len(record)} bytes is shorter than the 24-byte IRHeader")
    flag, label, key, key2 = _IR.unpack_from(record)
    end = _IR.size + 4 * flag
    if flag == 0:
        return IRHeader(0, label, key, key2), record[_IR.size :]
    if len(record) < end:
        raise RecordIOError(f"{source}: IRHeader announces {flag} labels, the record has {len(record)} bytes")
    labels = np.frombuffer(record, dtype="<f4", count=flag, offset=_IR.size).astype(np.float32)
    return IRHeader(flag, labels, key, key2), record[end:]


def _read_index(idx_path: Path, rec_size: int) -> dict[int, int]:
    if not idx_path.is_file():
        raise FileNotFoundError(f"RecordIO index not found: {idx_path}")
    data = idx_path.read_bytes()
    text = decode_text(data, idx_path, "ascii", RecordIOError, "expected 'key<TAB>offset' lines of decimal integers")
    offsets: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            key, offset = int(fields[0]), int(fields[1])
        except (ValueError, IndexError):
            raise RecordIOError(f"{idx_path}:{number}: expected 'key<TAB>offset', got {line!r}") from None
        if not 0 <= offset <= rec_size - _FRAME.size:
            raise RecordIOError(
                f"{idx_path}:{number}: key {key} points to offset {offset}, past the end of the "
                f"{rec_size}-byte record file (index and .rec do not match)"
            )
        offsets[key] = offset
    return offsets


class RecordReader:
    """Random access to an indexed RecordIO file; picklable (the handle reopens lazily per process).

    Args:
        rec_path: The ``.rec`` file.
        idx_path: Default ``rec_path`` with suffix ``.idx``.

    Raises:
        FileNotFoundError: A file is missing.
        RecordIOError: Non-ASCII index, a malformed line, or an offset past the ``.rec`` end.

    Attributes:
        offsets: Byte offset per key, in index order.
        rec_size: ``.rec`` size at open; no read goes past it.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"RecordIO file not found: {self.rec_path}")
        self.rec_size = self.rec_path.stat().st_size
        self.offsets = _read_index(self.idx_path, self.rec_size)
        self._handle: BinaryIO | None = None
        self._pid: int | None = None

    @property
    def keys(self) -> list[int]:
        """Record keys in index order."""
        return list(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def close(self) -> None:
        """Closes this process's handle (reopened on the next read)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid = None, None

    def _file(self) -> BinaryIO:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self.rec_path.open("rb"), os.getpid()
        return self._handle

    def source(self, key: int) -> str:
        """``file.rec@offset`` of a record, for messages."""
        return f"{self.rec_path}@{self.offsets[key]}"

    def read(self, key: int) -> bytes:
        """Record under ``key``, parts joined; KeyError, or RecordIOError for bad magic/flag/truncation."""
        return self.read_at(self.offsets[key])

    def read_header(self, key: int) -> IRHeader:
        """``IRHeader`` of a record, reading only its first bytes."""
        offset = self.offsets[key]
        cflag, length = self._read_frame(offset)
        if cflag != _WHOLE:
            return unpack(self.read_at(offset), f"{self.rec_path}@{offset}")[0]
        head = self._read_exact(offset + _FRAME.size, min(length, _IR.size), offset)
        flag = _IR.unpack_from(head)[0] if len(head) == _IR.size else 0
        head += self._read_exact(offset + _FRAME.size + len(head), min(length - len(head), 4 * flag), offset)
        return unpack(head, f"{self.rec_path}@{offset}")[0]

    def read_at(self, offset: int) -> bytes:
        """Record starting at byte ``offset``."""
        parts, position = [], offset
        while True:
            cflag, length = self._read_frame(position)
            expected = (_WHOLE, _START) if not parts else (_MIDDLE, _END)
            if cflag not in expected:
                raise RecordIOError(
                    f"{self.rec_path}@{position}: continuation flag {cflag} where {expected} was expected "
                    f"(record starting at {offset})"
                )
            parts.append(self._read_exact(position + _FRAME.size, length, offset))
            position += _FRAME.size + length
            if cflag in (_WHOLE, _END):
                return _MAGIC_BYTES.join(parts)

    def _read_frame(self, position: int) -> tuple[int, int]:
        magic, lrecord = _FRAME.unpack(self._read_exact(position, _FRAME.size, position))
        if magic != MAGIC:
            raise RecordIOError(
                f"{self.rec_path}@{position}: bad magic 0x{magic:08x}, expected 0x{MAGIC:08x} "
                "(not a RecordIO file, or the .idx offset is wrong)"
            )
        return lrecord >> 29, lrecord & _MAX_PART

    def _read_exact(self, position: int, size: int, record_offset: int) -> bytes:
        """``size`` bytes at ``position``, checked against the file size first (lengths are untrusted)."""
        handle = self._file()
        handle.seek(position)
        data = handle.read(size) if position + size <= self.rec_size else handle.read(max(self.rec_size - position, 0))
        if len(data) != size:
            raise RecordIOError(
                f"{self.rec_path}@{record_offset}: truncated record: wanted {size} bytes at offset "
                f"{position}, the file ends after {len(data)}"
            )
        return data


class RecordWriter:
    """Writes an indexed RecordIO file that MXNet's ``MXIndexedRecordIO`` reads; a context manager.

    Args:
        rec_path: ``.rec`` to create (overwritten).
        idx_path: Default ``rec_path`` with suffix ``.idx``.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        rec_path = Path(rec_path)
        idx_path = Path(idx_path) if idx_path is not None else rec_path.with_suffix(".idx")
        self._rec = rec_path.open("wb")
        self._idx = idx_path.open("w")

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Flushes and closes both files."""
        self._rec.close()
        self._idx.close()

    def write(self, key: int, record: bytes) -> None:
        """Appends ``record`` under ``key``, split at 4-byte-aligned magic words (dmlc-core)."""
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        start, position = 0, record.find(_MAGIC_BYTES)
        while position >= 0:
            if position % 4 == 0:
                self._write_part(_START if start == 0 else _MIDDLE, record[start:position])
                start = position + 4
            position = record.find(_MAGIC_BYTES, position + 1)
        self._write_part(_END if start else _WHOLE, record[start:])
        self._rec.write(b"\0" * (-len(record) % 4))

    def _write_part(self, cflag: int, part: bytes) -> None:
        if len(part) > _MAX_PART:
            raise ValueError(f"record part of {len(part)} bytes exceeds RecordIO's 29-bit length limit")
        self._rec.write(_FRAME.pack(MAGIC, cflag << 29 | len(part)) + part)
