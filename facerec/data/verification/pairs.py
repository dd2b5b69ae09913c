"""LFW-style ``pairs.txt`` verification protocols: reading, checking and writing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from facerec.data.text import decode_text
from facerec.errors import DataFileError

_NUMBER = re.compile(r"[0-9]{1,9}")
"""Image number or header count: 1 to 9 ASCII digits."""
SAME_LINE = "a same-person line 'name<TAB>n1<TAB>n2' (3 columns, integer n1 and n2 of at most 9 digits)"
DIFFERENT_LINE = (
    "a different-person line 'name1<TAB>n1<TAB>name2<TAB>n2' (4 columns, integer n1 and n2 of at most 9 digits)"
)


@dataclass(frozen=True)
class PairList:
    """Relative image path pairs and labels, in file order; ``folds``: the ``folds n`` header's count (contiguous
    equal blocks), None for a single-count header.
    """

    left: list[str]
    right: list[str]
    issame: list[bool]
    folds: int | None = None

    def __len__(self) -> int:
        return len(self.issame)


def lfw_image_path(name: str, number: int, extension: str = ".jpg") -> str:
    """``name/name_%04d.jpg`` (LFW naming)."""
    return f"{name}/{name}_{number:04d}{extension}"


def split_pair_line(line: str) -> list[str]:
    """Columns of a line: tab-separated if it has a tab, else whitespace-separated."""
    if "\t" in line:
        return [field.strip() for field in line.strip().split("\t")]
    return line.split()


def read_pairs(path: str | Path, extension: str = ".jpg") -> PairList:
    """Parses an LFW-style pairs file; image ``k`` of ``name`` becomes ``name/name_%04d<extension>``.

    Format (UTF-8, BOM allowed, blank lines ignored): header ``folds n`` (``folds`` blocks of ``n`` same then
    ``n`` different lines) or ``n`` (one block, as ``pairsDevTest.txt``); same lines ``name n1 n2``, different
    lines ``name1 n1 name2 n2``. Columns are tab-separated, or whitespace-separated on a line without a tab.
    Each line must be the kind its position calls for.

    Raises:
        FileNotFoundError: Missing file.
        DataFileError: Not UTF-8, bad header, line count not ``folds × 2 × n``, or a malformed line
            (names file, line and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    data = path.read_bytes()
    text = decode_text(
        data, path, "utf-8-sig", DataFileError, "a pairs file is UTF-8, with or without a byte order mark"
    )
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise DataFileError(f"{path}: empty pairs file")
    (header_number, header), body = lines[0], lines[1:]
    folds, per_fold = _parse_header(header, header_number, path)
    expected = 2 * (folds or 1) * per_fold
    if len(body) != expected:
        layout = (
            f"{folds} folds of {per_fold} same then {per_fold} different"
            if folds
            else f"{per_fold} same then {per_fold} different"
        )
        raise DataFileError(
            f"{path}: header {header.strip()!r} promises {expected} pairs, found {len(body)} "
            f"({layout} pair lines after the header)"
        )
    left, right, issame = [], [], []
    for position, (number, line) in enumerate(body):
        fold, offset = divmod(position, 2 * per_fold)
        same = offset < per_fold
        fields = split_pair_line(line)
        if not _matches(fields, same):
            where = f"fold {fold + 1} of {folds}, " if folds else ""
            kind, index = ("same", offset + 1) if same else ("different", offset - per_fold + 1)
            hint = ""
            if "\t" not in line and len(fields) > (3 if same else 4):
                hint = "; a name with spaces needs tab-separated columns"
            raise DataFileError(
                f"{path}:{number}: malformed pair line {line!r}: expected {SAME_LINE if same else DIFFERENT_LINE} "
                f"for {where}{kind}-person pair {index} of {per_fold}, got {len(fields)} columns "
                f"{fields}{hint}"
            )
        if same:
            name, a, b = fields
            left.append(lfw_image_path(name, int(a), extension))
            right.append(lfw_image_path(name, int(b), extension))
        else:
            name_a, a, name_b, b = fields
            left.append(lfw_image_path(name_a, int(a), extension))
            right.append(lfw_image_path(name_b, int(b), extension))
        issame.append(same)
    return PairList(left, right, issame, folds)


def _matches(fields: list[str], same: bool) -> bool:
    if len(fields) != (3 if same else 4) or not all(fields):
        return False
    numbers = fields[1:] if same else fields[1::2]
    return all(_NUMBER.fullmatch(number) for number in numbers)


def _parse_header(header: str, number: int, path: Path) -> tuple[int | None, int]:
    """``(folds, n)`` of a ``folds n`` header, ``(None, n)`` of a single count ``n``."""
    fields = split_pair_line(header)
    if 1 <= len(fields) <= 2 and all(_NUMBER.fullmatch(field) and int(field) > 0 for field in fields):
        numbers = [int(field) for field in fields]
        return (numbers[0], numbers[1]) if len(numbers) == 2 else (None, numbers[0])
    raise DataFileError(
        f"{path}:{number}: header must be 'folds<TAB>n' or a count 'n' (positive integers of at most 9 digits), "
        f"got {header.strip()!r}"
    )


def check_pair_name(name: str) -> None:
    """ValueError if ``name`` is empty, has a tab or line break, or outer whitespace."""
    if not name or name != name.strip() or any(char in name for char in "\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"):
        raise ValueError(
            f"identity name {name!r} cannot be stored in pairs.txt: names must be non-empty, without tabs or "
            "line breaks and without leading or trailing whitespace; rename its folder"
        )


def write_pairs(
    path: str | Path, folds: list[tuple[list[tuple[str, int, int]], list[tuple[str, int, str, int]]]]
) -> None:
    """Writes a tab-separated UTF-8 ``pairs.txt`` with header ``folds<TAB>n`` (names with spaces read back).

    Args:
        path: Output file.
        folds: Per fold, ``n`` same ``(name, n1, n2)`` and ``n`` different ``(name1, n1, name2, n2)``.

    Raises:
        ValueError: Folds differ in size, or a name fails :func:`check_pair_name`.
    """
    per_fold = {len(same) for same, _ in folds} | {len(diff) for _, diff in folds}
    if len(per_fold) != 1:
        raise ValueError("every fold needs the same number of same and different pairs")
    for same, different in folds:
        for name, *_ in same:
            check_pair_name(name)
        for first, _, second, _ in different:
            check_pair_name(first)
            check_pair_name(second)
    lines = [f"{len(folds)}\t{per_fold.pop()}"]
    for same, different in folds:
        lines += ["\t".join(map(str, pair)) for pair in same]
        lines += ["\t".join(map(str, pair)) for pair in different]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
