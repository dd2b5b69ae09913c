"""Output files checked before the work: writable, not a directory, not replaced without consent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def check_output_file(path: str | Path, overwrite: bool, option: str, overwrite_option: str) -> Path:
    """Checks before any work that ``path`` can be written new (or replaced with ``overwrite``); creates its folders.

    Args:
        path: Output file.
        overwrite: Whether an existing file may be replaced.
        option: The user's name for it, for messages (``--out``, ``metrics_file``).
        overwrite_option: How the user allows replacing (``--overwrite``, ``overwrite=true``).

    Returns:
        ``path`` as a Path.

    Raises:
        IsADirectoryError: ``path`` is a directory.
        FileExistsError: It exists and not ``overwrite``.
        PermissionError: Its folder cannot be created or written, or the file is read-only.
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
    """ValueError, naming both options, if two ``(option, path)`` outputs resolve to one file."""
    seen: dict[Path, str] = {}
    for option, path in outputs:
        resolved = path.resolve()
        if resolved in seen:
            raise ValueError(f"{seen[resolved]} and {option} both name {path}: give each output its own file")
        seen[resolved] = option
