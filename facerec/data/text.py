"""Reading untrusted text input files (landmark lists, IJB meta files): UTF-8 checked, errors naming file:line."""

from __future__ import annotations

from pathlib import Path

from facerec.errors import DataFileError

UTF8_BOM = b"\xef\xbb\xbf"


class TextFileError(DataFileError):
    """A text input file breaks its format; the message names the file (and line) and says what is expected."""


def read_utf8(path: str | Path, expected: str) -> bytes:
    """The bytes of a UTF-8 text file, without a leading byte-order mark; each line checked to be valid UTF-8.

    Args:
        path: The file.
        expected: What it should hold, for error messages (``"lines 'path x1 y1 ... x5 y5 [score]'"``).

    Returns:
        The file's bytes (a leading UTF-8 BOM removed).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        TextFileError: If it is not a regular file, is empty (no non-blank line) or holds bytes that are not
            UTF-8 (naming the first such line).
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
