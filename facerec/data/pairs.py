"""LFW-style ``pairs.txt`` verification protocols.

Format: a header line, either ``folds<TAB>n`` (``pairs.txt``: ``folds`` blocks of ``n`` same then
``n`` different lines) or a single count (``pairsDevTest.txt``); then same-identity lines
``name n1 n2`` and different-identity lines ``name1 n1 name2 n2``. Image ``k`` of ``name`` is
``name/name_%04d.jpg``. Pair order in the file is preserved: folds are contiguous blocks of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PairList:
    """Pairs of relative image paths with their same/different labels, in file order."""

    left: list[str]
    right: list[str]
    issame: list[bool]

    def __len__(self) -> int:
        return len(self.issame)


def lfw_image_path(name: str, number: int, extension: str = ".jpg") -> str:
    """``name/name_%04d.jpg``, LFW's image naming convention."""
    return f"{name}/{name}_{number:04d}{extension}"


def read_pairs(path: str | Path, extension: str = ".jpg") -> PairList:
    """Parses an LFW-style pairs file.

    Args:
        path: The ``pairs.txt`` file.
        extension: Image file extension used to build the relative paths.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: On a malformed line (the message gives the line number) or a count that does
            not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    lines = [line.split() for line in path.read_text().splitlines()]
    lines = [fields for fields in lines if fields]
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    header, body = lines[0], lines[1:]
    left, right, issame = [], [], []
    for number, fields in enumerate(body, start=2):
        try:
            if len(fields) == 3:
                name, a, b = fields
                left.append(lfw_image_path(name, int(a), extension))
                right.append(lfw_image_path(name, int(b), extension))
                issame.append(True)
            elif len(fields) == 4:
                name_a, a, name_b, b = fields
                left.append(lfw_image_path(name_a, int(a), extension))
                right.append(lfw_image_path(name_b, int(b), extension))
                issame.append(False)
            else:
                raise ValueError(f"expected 3 or 4 fields, got {len(fields)}")
        except ValueError as error:
            raise ValueError(f"{path}:{number}: malformed pair line {' '.join(fields)!r}: {error}") from None
    expected = _expected_count(header, path)
    if expected is not None and expected != len(issame):
        raise ValueError(f"{path}: header {' '.join(header)!r} promises {expected} pairs, found {len(issame)}")
    return PairList(left, right, issame)


def _expected_count(header: list[str], path: Path) -> int | None:
    try:
        numbers = [int(field) for field in header]
    except ValueError:
        raise ValueError(f"{path}:1: header must be 'folds<TAB>n' or a count, got {' '.join(header)!r}") from None
    if len(numbers) == 2:
        return 2 * numbers[0] * numbers[1]
    if len(numbers) == 1:
        return 2 * numbers[0]
    raise ValueError(f"{path}:1: header must be 'folds<TAB>n' or a count, got {' '.join(header)!r}")


def write_pairs(
    path: str | Path, folds: list[tuple[list[tuple[str, int, int]], list[tuple[str, int, str, int]]]]
) -> None:
    """Writes a ``pairs.txt`` with header ``folds<TAB>n``.

    Args:
        path: Output file.
        folds: Per fold, ``n`` same pairs ``(name, n1, n2)`` and ``n`` different pairs
            ``(name1, n1, name2, n2)``.
    """
    per_fold = {len(same) for same, _ in folds} | {len(diff) for _, diff in folds}
    if len(per_fold) != 1:
        raise ValueError("every fold needs the same number of same and different pairs")
    lines = [f"{len(folds)}\t{per_fold.pop()}"]
    for same, different in folds:
        lines += ["\t".join(map(str, pair)) for pair in same]
        lines += ["\t".join(map(str, pair)) for pair in different]
    Path(path).write_text("\n".join(lines) + "\n")
