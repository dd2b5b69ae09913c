"""IJB-B / IJB-C meta files ``*_face_tid_mid.txt`` and ``*_template_pair_label.txt``, parsed vectorised.

Untrusted: UTF-8 (BOM allowed), non-empty, every line checked; TextFileError names the file and line.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from facerec.data.text import TextFileError, read_utf8

log = logging.getLogger(__name__)

MEDIA_LAYOUT = "image_name template_id media_id"
PAIR_LAYOUT = "template_id1 template_id2 label"
_WHITESPACE = np.isin(np.arange(256), (9, 10, 11, 12, 13, 32))  # bytes.split()'s ASCII whitespace, by byte value


def _line_field_counts(data: bytes) -> np.ndarray:
    """(L,) whitespace-separated field count of each line of ``data``."""
    if not data:
        return np.zeros(0, dtype=np.int64)
    buffer = np.frombuffer(data, dtype=np.uint8)
    space = _WHITESPACE[buffer]
    token_start = ~space
    token_start[1:] &= space[:-1]
    line_starts = np.r_[0, np.flatnonzero(buffer == 10) + 1]
    if line_starts[-1] == len(buffer):
        line_starts = line_starts[:-1]
    return np.add.reduceat(token_start, line_starts, dtype=np.int64)


def _check_fields(path: Path, counts: np.ndarray, n_fields: int, layout: str) -> np.ndarray:
    """1-based numbers of non-blank lines; TextFileError for the first without ``n_fields`` fields."""
    bad = np.flatnonzero((counts != n_fields) & (counts != 0))
    if len(bad):
        line = int(bad[0]) + 1
        raise TextFileError(f"{path}:{line}: expected {n_fields} fields ({layout}), got {int(counts[bad[0]])}")
    return np.flatnonzero(counts) + 1


def _first_bad_integer(path: Path, data: bytes, columns: range) -> TextFileError:
    """Error for the first line whose ``columns`` are not int64 (slow path after a failure)."""
    limits = np.iinfo(np.int64)
    for number, line in enumerate(data.split(b"\n"), start=1):
        for column, token in enumerate(line.split()):
            if column not in columns:
                continue
            try:
                value = int(token.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                text = token.decode("utf-8", "backslashreplace")
                return TextFileError(f"{path}:{number}: field {column + 1} is not an integer: {text!r}")
            if not limits.min < value < limits.max:
                return TextFileError(f"{path}:{number}: field {column + 1} is out of the int64 range: {value}")
    return TextFileError(f"{path}: could not parse the integer fields")


def pair_line_number(path: str | Path, index: int) -> int:
    """1-based line of pair ``index`` (0-based, blank lines skipped) in a pair file."""
    return int(np.flatnonzero(_line_field_counts(read_utf8(path, PAIR_LAYOUT)))[index]) + 1


def _parse_integers(path: Path, data: bytes, count: int, columns: range) -> np.ndarray:
    """(count,) int64 of all whitespace-separated tokens, in one vectorised pass."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            values = np.fromstring(data, dtype=np.int64, sep=" ")  # text mode: not deprecated, C speed
    except (ValueError, DeprecationWarning):
        values = None
    limits = np.iinfo(np.int64)
    if values is None or len(values) != count or (values == limits.max).any() or (values == limits.min).any():
        raise _first_bad_integer(path, data, columns)
    return values


def read_template_media(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Reads ``*_face_tid_mid.txt``: ``image_name template_id media_id`` per line (blank lines skipped).

    Returns:
        (names, templates, medias): N names, (N,) int64 ids.

    Raises:
        FileNotFoundError: Missing file.
        TextFileError: Folder, empty, not UTF-8, a line without 3 fields, a non-integer id, an absolute or
            ``..`` name, a name with a drive (``:``), or a repeated image (names the line).
    """
    path = Path(path)
    data = read_utf8(path, f"lines '{MEDIA_LAYOUT}'")
    line_numbers = _check_fields(path, _line_field_counts(data), 3, MEDIA_LAYOUT)
    tokens = data.split()
    names = [name.decode() for name in tokens[0::3]]
    try:
        ids = np.array(tokens[1::3] + tokens[2::3], dtype=np.int64)
    except (ValueError, OverflowError):
        raise _first_bad_integer(path, data, range(1, 3)) from None
    for row, name in enumerate(names):
        if name.startswith(("/", "\\")) or ":" in name or ".." in name.replace("\\", "/").split("/"):
            raise TextFileError(
                f"{path}:{line_numbers[row]}: image name {name!r} must be a path relative to the image folder "
                "(loose_crop/), without '..' or a drive"
            )
    if len(set(names)) != len(names):
        first_row: dict[str, int] = {}
        for row, name in enumerate(names):
            if name in first_row:
                raise TextFileError(
                    f"{path}:{line_numbers[row]}: image {name} is already listed on line "
                    f"{line_numbers[first_row[name]]}: expected each image once"
                )
            first_row[name] = row
    return names, ids[: len(names)], ids[len(names) :]


def read_template_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads ``*_template_pair_label.txt``: ``template_id1 template_id2 label`` per line (1 = same).

    A pair repeated (either order) with both labels is refused; with one label, kept with a warning.
    Returns (template1, template2, labels), each (P,) int64.

    Raises:
        FileNotFoundError: Missing file.
        TextFileError: Folder, empty, not UTF-8, a malformed line, a label not 0/1, or contradicting labels.
    """
    path = Path(path)
    data = read_utf8(path, f"lines '{PAIR_LAYOUT}'")
    line_numbers = _check_fields(path, _line_field_counts(data), 3, PAIR_LAYOUT)
    values = _parse_integers(path, data, 3 * len(line_numbers), range(3)).reshape(-1, 3)
    bad_labels = np.flatnonzero((values[:, 2] != 0) & (values[:, 2] != 1))
    if len(bad_labels):
        row = int(bad_labels[0])
        raise TextFileError(f"{path}:{int(line_numbers[row])}: label must be 0 or 1, got {int(values[row, 2])}")
    _check_repeated_pairs(path, values, line_numbers)
    return values[:, 0].copy(), values[:, 1].copy(), values[:, 2].copy()


def _check_repeated_pairs(path: Path, values: np.ndarray, line_numbers: np.ndarray) -> None:
    """Refuses a pair listed with both labels; warns about one listed twice with one label."""
    first, second = np.minimum(values[:, 0], values[:, 1]), np.maximum(values[:, 0], values[:, 1])
    if first.min() >= 0 and second.max() < 2**31:  # fast path: one sort of packed keys, lines found only on a repeat
        keys = np.sort(first << 31 | second)
        if not (keys[1:] == keys[:-1]).any():
            return
    order = np.lexsort((second, first))
    repeated = (first[order][1:] == first[order][:-1]) & (second[order][1:] == second[order][:-1])
    if not repeated.any():
        return
    contradicting = np.flatnonzero(repeated & (values[order, 2][1:] != values[order, 2][:-1]))
    if len(contradicting):
        earlier, later = sorted(order[contradicting[0] : contradicting[0] + 2])
        raise TextFileError(
            f"{path}:{int(line_numbers[later])}: templates {int(values[later, 0])} and {int(values[later, 1])} "
            f"have label {int(values[later, 2])}, but line {int(line_numbers[earlier])} gives them label "
            f"{int(values[earlier, 2])}: expected one label per template pair"
        )
    earlier, later = sorted(order[np.flatnonzero(repeated)[0] :][:2])
    log.warning(
        "%s: %d template pairs are listed more than once (e.g. lines %d and %d); each copy is scored",
        path, int(repeated.sum()), int(line_numbers[earlier]), int(line_numbers[later]),
    )  # fmt: skip
