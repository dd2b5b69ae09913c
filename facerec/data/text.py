"""Reading untrusted UTF-8 text input files, with errors naming file:line."""

from __future__ import annotations

from pathlib import Path

from facerec.errors import DataFileError

UTF8_BOM = b"\xef\xbb\xbf"


class TextFileError(DataFileError):
    """A text input file breaks its format; the message names file (and line) and what is expected."""


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
    try:
        if not data.isascii():  # IJB-C's 15.7M-line pair file is ASCII: no decoded copy
            data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise TextFileError(
            f"{path}:{line}: byte {data[error.start : error.start + 1]!r} is not UTF-8 ({error.reason}): save the "
            "file as UTF-8"
        ) from None
    if not data.strip():
        raise TextFileError(f"{path} is empty: expected {expected}")
    return data
