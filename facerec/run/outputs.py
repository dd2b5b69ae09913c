"""Output files checked before the work: writable, not a directory, and not replaced without consent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def check_output_file(path: str | Path, overwrite: bool, option: str, overwrite_option: str) -> Path:
    """Checks, before any work, that ``path`` can be written as a new file (or replaced, with ``overwrite``).

    Creates the file's missing folders, so that a folder that cannot be created is found now.

    Args:
        path: The output file.
        overwrite: Whether an existing file may be replaced.
        option: How the user named the file, for messages (e.g. ``--out``, ``metrics_file``).
        overwrite_option: How the user allows replacing it (e.g. ``--overwrite``, ``overwrite=true``).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        IsADirectoryError: If ``path`` is a directory.
        FileExistsError: If ``path`` exists and ``overwrite`` is false.
        PermissionError: If its folder cannot be created or written, or the file cannot be replaced.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option}={path} is a directory: name a file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{option}={path} exists: pass {overwrite_option} to replace it, or choose another file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise PermissionError(
            f"{option}={path}: its folder {path.parent} cannot be created or written ({error.strerror or error}); "
            "choose another file"
        ) from error
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{option}={path} cannot be replaced (read-only): choose another file")
    return path


def check_distinct(outputs: Iterable[tuple[str, Path]]) -> None:
    """Refuses two outputs that name the same file.

    Args:
        outputs: ``(option, path)`` of each output.

    Raises:
        ValueError: Naming both options and the file.
    """
    seen: dict[Path, str] = {}
    for option, path in outputs:
        resolved = path.resolve()
        if resolved in seen:
            raise ValueError(f"{seen[resolved]} and {option} both name {path}: give each output its own file")
        seen[resolved] = option
