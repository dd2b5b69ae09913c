"""Hypothesis strategies for fuzzing file readers: random bytes and mutations of a valid file."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
"""Reproducible (derandomized), database-free settings for the fuzz tests; override ``max_examples`` per test."""

_EDITS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**32), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 2**32), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 2**32), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 2**32), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, 2**32), st.just(0)),
)


def mutate(data: bytes, edits: list[tuple[str, int, int | bytes]]) -> bytes:
    """``data`` after each edit ``(kind, position, argument)``; positions wrap around the current length.

    Kinds: ``flip`` (xor a byte with the argument), ``set`` (overwrite a byte), ``insert`` (the argument's
    bytes), ``delete`` (the argument's count of bytes), ``truncate`` (cut the file at the position).
    """
    buffer = bytearray(data)
    for kind, position, argument in edits:
        at = position % (len(buffer) + 1)
        if kind == "insert":
            buffer[at:at] = argument
        elif kind == "truncate":
            del buffer[at:]
        elif at < len(buffer):
            if kind == "flip":
                buffer[at] ^= argument
            elif kind == "set":
                buffer[at] = argument
            else:
                del buffer[at : at + argument]
    return bytes(buffer)


def mutations(data: bytes, max_edits: int = 4) -> st.SearchStrategy[bytes]:
    """Byte strings derived from the valid file ``data``: 1 to ``max_edits`` flips, inserts, deletes, truncations."""
    return st.lists(_EDITS, min_size=1, max_size=max_edits).map(lambda edits: mutate(data, edits))


def fuzzed(data: bytes, max_edits: int = 4) -> st.SearchStrategy[bytes]:
    """Mostly :func:`mutations` of ``data``, sometimes random bytes (up to twice its length)."""
    return st.one_of(mutations(data, max_edits), st.binary(max_size=2 * len(data) + 16))
