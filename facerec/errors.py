"""facerec's error types for the files it reads."""

from __future__ import annotations


class DataFileError(ValueError):
    """A data file that is malformed or refused as unsafe (pairs list, ``.bin``, ``.rec``/``.idx``, image, ...).

    Every file facerec reads is untrusted: whatever bytes it holds, its reader raises this (or a subclass)
    with a message naming the file, where in it (line, byte offset, item) and what was expected.
    """
