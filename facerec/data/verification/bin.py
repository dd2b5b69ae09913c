"""insightface ``.bin`` verification sets (``lfw.bin``, ...): a pickle of ``(bins, issame)``, read by a restricted
unpickler that admits only plain ``uint8``/``bool`` numpy arrays, bytes, lists and bools.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.data.decode import decode_image
from facerec.errors import DataFileError


class UnsafePickleError(DataFileError, pickle.UnpicklingError):
    """A pickle asks for something a verification ``.bin`` never needs (a global, a dtype, an array state)."""


_PLAIN_DTYPES = {"u1": np.dtype(np.uint8), "b1": np.dtype(np.bool_)}
_EXPECTED_DTYPES = "a verification .bin holds only plain uint8 ('u1') and bool ('b1') arrays"
_PLAIN_DTYPE_STATE = (None, None, None, -1, -1, 0)
"""Tail of ``numpy.dtype.__setstate__``'s ``(3, '|', ...)`` for ``u1``/``b1``: no subarray, fields, flags."""
_MAX_DIMENSIONS = 32


class _Dtype:
    """Stand-in for ``numpy.dtype(descr)``: only ``u1``/``b1``, state checked on BUILD."""

    __slots__ = ("dtype",)

    def __init__(self, descr: object) -> None:
        name = descr.decode("latin1") if isinstance(descr, bytes) else descr
        if not (isinstance(name, str) and name in _PLAIN_DTYPES):
            raise UnsafePickleError(f"refused numpy dtype {_short(descr)}: {_EXPECTED_DTYPES}")
        self.dtype = _PLAIN_DTYPES[name]

    def __setstate__(self, state: object) -> None:
        plain = (
            isinstance(state, tuple)
            and len(state) == 8
            and state[0] == 3
            and state[1] in ("|", b"|")
            and state[2:] == _PLAIN_DTYPE_STATE
        )
        if not plain:
            raise UnsafePickleError(
                f"refused numpy dtype state {_short(state)} for {self.dtype.str[1:]!r}: expected the plain "
                f"(3, '|', None, None, None, -1, -1, 0) (no fields, subarray, object flags); {_EXPECTED_DTYPES}"
            )


class _Array:
    """Stand-in for ``_reconstruct(ndarray, ...)``; ``array`` is None until a checked BUILD state arrives."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None = None) -> None:
        self.array = array

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and state[3] in (True, False)):
            raise UnsafePickleError(
                f"refused numpy array state {_short(state)}: expected (1, shape, dtype, is_fortran, raw bytes)"
            )
        _, shape, dtype, fortran, raw = state
        self.array = _build_array(raw, dtype, shape, "F" if fortran else "C")


class _NdarrayType:
    """Stand-in for the global ``numpy.ndarray``: only an argument of ``_reconstruct``."""

    __slots__ = ()


_NDARRAY = _NdarrayType()


def _build_array(raw: object, dtype: object, shape: object, order: str) -> np.ndarray:
    """Read-only array over ``raw``, once the dtype is plain and ``shape`` matches the byte count."""
    if not isinstance(dtype, _Dtype):
        raise UnsafePickleError(f"refused array dtype {_short(dtype)}: {_EXPECTED_DTYPES}")
    valid_shape = (
        isinstance(shape, tuple)
        and len(shape) <= _MAX_DIMENSIONS
        and all(type(size) is int and size >= 0 for size in shape)
    )
    if not valid_shape:
        raise UnsafePickleError(f"refused array shape {_short(shape)}: expected a tuple of non-negative integers")
    if not isinstance(raw, bytes | bytearray) or len(raw) != math.prod(shape):
        got = f"{len(raw)} bytes" if isinstance(raw, bytes | bytearray) else type(raw).__name__
        raise UnsafePickleError(f"refused array data: shape {shape} needs {math.prod(shape)} bytes, got {got}")
    return np.frombuffer(bytes(raw), dtype=dtype.dtype).reshape(shape, order=order)


class _ExactReader(io.BytesIO):
    """The file's bytes; reading past the end raises."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if size is not None and 0 <= size != len(data):
            raise pickle.UnpicklingError(f"truncated: wanted {size} bytes at offset {self.tell() - len(data)}")
        return data


class _RestrictedUnpickler(pickle._Unpickler):
    """Resolves only numpy array reconstruction globals, each to a checked stand-in (arbitrary globals run code;
    a forged numpy dtype with an object field makes arbitrary pointers). Pure-Python: its memo is a dict,
    where the C unpickler's can be forced into a huge allocation.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(_ExactReader(data), encoding="bytes")

    def find_class(self, module: str, name: str) -> object:
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy._core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): self._dtype,
            ("_codecs", "encode"): self._latin1_encode,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise UnsafePickleError(
            f"refused to load global {module}.{name}: a verification .bin only needs numpy "
            "arrays, bytes, lists and bools (the file may be malicious or not a verification set)"
        )

    @staticmethod
    def _reconstruct(subtype: object, *_: object) -> _Array:
        """``_reconstruct``: an empty stand-in that BUILD fills; only for ``numpy.ndarray``."""
        if subtype is not _NDARRAY:
            raise UnsafePickleError(f"refused _reconstruct of {_short(subtype)}: only numpy.ndarray is allowed")
        return _Array()

    @staticmethod
    def _frombuffer(buffer: object, dtype: object, shape: object, order: object, *_: object) -> _Array:
        """numpy's ``_frombuffer`` (protocol-5 arrays), C or F order."""
        if order not in ("C", "F"):
            raise UnsafePickleError(f"refused _frombuffer order {_short(order)}: expected 'C' or 'F'")
        return _Array(_build_array(buffer, dtype, shape, order))

    @staticmethod
    def _dtype(descr: object, *_: object) -> _Dtype:
        """``numpy.dtype(descr, align, copy)``: a plain dtype."""
        return _Dtype(descr)

    @staticmethod
    def _latin1_encode(text: object, encoding: object) -> bytes:
        """``_codecs.encode`` for latin-1 only (protocol-2 bytes from Python 3)."""
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise UnsafePickleError(f"_codecs.encode with encoding {_short(encoding)} refused: only latin1 is allowed")
        return text.encode("latin1")


def _short(value: object) -> str:
    """``repr(value)`` cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class VerificationBin:
    """Decoded pairs: RGB uint8 (H, W, 3) ``images[2k]``, ``images[2k + 1]`` form pair ``k``; ``issame[k]``."""

    images: list[np.ndarray]
    issame: list[bool]

    def __len__(self) -> int:
        return len(self.issame)


def load_verification_bin(path: str | Path, expected_size: tuple[int, int] | None = None) -> VerificationBin:
    """Loads and decodes an insightface ``.bin`` (Python 2 or 3 pickle, protocols 0–5).

    Format: pickled ``(bins, issame)``; ``bins``: 2 encoded images per pair (bytes or uint8 arrays);
    ``issame``: bools (or 0/1) or a 1-D bool array.

    Args:
        path: The ``.bin`` file.
        expected_size: (H, W) every image must have, or None.

    Raises:
        FileNotFoundError: Missing file.
        UnsafePickleError: A global outside numpy array reconstruction, a non-plain dtype, or a mismatched array state.
        DataFileError: Not a pickle, or not ``(bins, issame)`` as above.
        CorruptImageError: An image cannot be decoded (source ``path[k]``).
        ImageSizeError: An image is not ``expected_size``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification .bin not found: {path}")
    try:
        content = _RestrictedUnpickler(path.read_bytes()).load()
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None
    except Exception as error:
        raise DataFileError(f"{path}: not a readable pickle: {type(error).__name__}: {error}") from None
    if not (isinstance(content, tuple | list) and len(content) == 2):
        raise DataFileError(f"{path}: expected a pickled (bins, issame) pair of lists, got {_describe(content)}")
    bins, issame = content
    if not isinstance(bins, tuple | list) or not isinstance(issame, tuple | list | _Array):
        raise DataFileError(f"{path}: expected a pickled (bins, issame) pair of lists, got {_describe(content)}")
    flags = _flags(issame, path)
    if len(bins) != 2 * len(flags):
        raise DataFileError(f"{path}: {len(bins)} images for {len(flags)} pairs; expected two images per pair")
    buffers = [_image_buffer(data, f"{path}[{index}]") for index, data in enumerate(bins)]
    images = [
        decode_image(data, source=f"{path}[{index}]", expected_size=expected_size) for index, data in enumerate(buffers)
    ]
    return VerificationBin(images, flags)


def _image_buffer(data: object, source: str) -> bytes | np.ndarray:
    """An encoded image of ``bins``: bytes or a uint8 array."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, _Array) and data.array is not None and data.array.dtype == np.uint8:
        return data.array
    raise DataFileError(f"{source}: expected JPEG bytes or a uint8 array, got {_kind(data)}")


def _flags(issame: tuple | list | _Array, path: Path) -> list[bool]:
    """``issame`` as bools, from bools/0/1 or a 1-D bool array."""
    if isinstance(issame, _Array):
        if issame.array is None or issame.array.dtype != np.bool_ or issame.array.ndim != 1:
            raise DataFileError(f"{path}: issame must be a list of bools or a 1-D bool array, got {_kind(issame)}")
        return issame.array.tolist()
    for index, flag in enumerate(issame):
        if type(flag) not in (bool, int) or flag not in (0, 1):
            raise DataFileError(f"{path}: issame[{index}] must be a bool (True/False or 1/0), got {_kind(flag)}")
    return [bool(flag) for flag in issame]


def _kind(value: object) -> str:
    """Type of an unpickled item, or an array's dtype and shape."""
    if isinstance(value, _Array):
        return (
            "an array without data"
            if value.array is None
            else f"a {value.array.dtype} array of shape {value.array.shape}"
        )
    if type(value) is int:
        return f"int {_short(value)}"
    return type(value).__name__


def _describe(content: object) -> str:
    if isinstance(content, tuple | list):
        return f"{type(content).__name__} of {', '.join(_kind(item) for item in content[:4])}"
    return _kind(content)


def write_verification_bin(
    path: str | Path, jpeg_buffers: Sequence[bytes | np.ndarray], issame: Sequence[bool]
) -> None:
    """Writes an insightface ``.bin``: pickled ``(list of bytes, list of bool)``, protocol 4.

    Raises ValueError unless two images per pair.
    """
    if len(jpeg_buffers) != 2 * len(issame):
        raise ValueError(f"{len(jpeg_buffers)} images for {len(issame)} pairs; expected two images per pair")
    bins = [bytes(buffer) if isinstance(buffer, bytes) else buffer.tobytes() for buffer in jpeg_buffers]
    with Path(path).open("wb") as file:
        pickle.dump((bins, [bool(flag) for flag in issame]), file, protocol=4)
