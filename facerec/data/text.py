"""Reading untrusted UTF-8 text input files, with errors naming file:line."""

from __future__ import annotations

from pathlib import Path

from facerec.errors import DataFileError

UTF8_BOM = b"\xef\xbb\xbf"


class TextFileError(DataFileError):
    """A text input file breaks its format; the message names file (and line) and what is expected."""


def decode_text(data: bytes, path: Path, encoding: str, error: type[DataFileError], hint: str) -> str:
    """``data`` decoded, or ``error`` naming the line and offset of the first byte that is not ``encoding``.

    Args:
        data: The file's bytes.
        path: The file, for the message.
        encoding: A Python codec name (``"utf-8"``, ``"utf-8-sig"``, ``"ascii"``).
        error: The reader's error type.
        hint: What the file should hold, appended to the message.
    """
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as failure:
        line = data.count(b"\n", 0, failure.start) + 1
        shown = encoding.removesuffix("-sig").upper()
        raise error(
            f"{path}:{line}: byte 0x{data[failure.start]:02x} at offset {failure.start} is not {shown}; {hint}"
        ) from None


def read_utf8(path: str | Path, expected: str) -> bytes:
    """Bytes of a UTF-8 text file, leading BOM removed.

    Args:
        path: The file.
        expected: What it should hold, for messages (``"lines 'path x1 y1 ...'"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TextFileError: Not a regular file, blank, or not UTF-8 (names the line).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: expected a text file of {expected}")
    if not path.is_file():
        raise TextFileError(f"{path} is not a regular file (a folder?): expected a text file of {expected}")
    data = path.read_bytes().removeprefix(UTF8_BOM)
    if not data.isascii():  # IJB-C's 15.7M-line pair file is ASCII: no decoded copy
        decode_text(data, path, "utf-8", TextFileError, "save the file as UTF-8")
    if not data.strip():
        raise TextFileError(f"{path} is empty: expected {expected}")
    return data
