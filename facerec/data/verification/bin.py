"""insightface ``.bin`` verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A ``.bin`` file is a pickle of ``(bins, issame)``: ``bins`` is a list of encoded images (JPEG
``bytes`` or ``numpy.uint8`` arrays), images ``2k`` and ``2k + 1`` form pair ``k`` and
``issame[k]`` says whether they show the same person (a list of bools or a bool array).

Pickles can run arbitrary code and numpy's own array unpickling trusts the dtype it is given (a
forged structured dtype with an object field makes an array of arbitrary pointers), so files are
read by a restricted unpickler: the pickle can only ask for a plain ``uint8`` (``u1``) or ``bool``
(``b1``) dtype, and an array is built only from such a dtype, a shape and raw bytes of the matching
size, each checked before numpy sees them. Everything else is refused with :class:`UnsafePickleError`.
The unpickler is Python's pure-Python one, whose memo cannot be forced to a huge allocation.
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
"""``numpy.dtype.__setstate__``'s ``(version 3, '|', ...)`` tail for ``u1`` and ``b1``: no subarray, fields or flags."""
_MAX_DIMENSIONS = 32


class _Dtype:
    """What ``numpy.dtype(descr, ...)`` in the pickle stands for: a plain dtype, checked on creation and on BUILD."""

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
    """What ``numpy.core.multiarray._reconstruct(ndarray, ...)`` in the pickle stands for: an array built by BUILD.

    ``array`` is ``None`` until a checked ``(1, shape, dtype, is_fortran, raw bytes)`` state arrives.
    """

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
    """What the global ``numpy.ndarray`` stands for: only an argument of ``_reconstruct``, never called."""

    __slots__ = ()


_NDARRAY = _NdarrayType()


def _build_array(raw: object, dtype: object, shape: object, order: str) -> np.ndarray:
    """A read-only array over ``raw`` once the dtype is plain and ``shape`` matches the byte count."""
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
    """The file's bytes; a read past the end is an error (Python's unpickler would return fewer bytes)."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if size is not None and 0 <= size != len(data):
            raise pickle.UnpicklingError(f"truncated: wanted {size} bytes at offset {self.tell() - len(data)}")
        return data


class _RestrictedUnpickler(pickle._Unpickler):
    """Resolves only the globals of numpy array reconstruction, each to a checked stand-in.

    The pure-Python unpickler keeps its memo in a dict (the C one allocates a list as long as the
    largest memo index, so a 10-byte pickle can take gigabytes).
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
        """``numpy.core.multiarray._reconstruct``: an empty stand-in that BUILD fills."""
        if subtype is not _NDARRAY:
            raise UnsafePickleError(f"refused _reconstruct of {_short(subtype)}: only numpy.ndarray is allowed")
        return _Array()

    @staticmethod
    def _frombuffer(buffer: object, dtype: object, shape: object, order: object, *_: object) -> _Array:
        """numpy's ``_frombuffer``, how protocol-5 pickles store (C- or Fortran-contiguous) arrays."""
        if order not in ("C", "F"):
            raise UnsafePickleError(f"refused _frombuffer order {_short(order)}: expected 'C' or 'F'")
        return _Array(_build_array(buffer, dtype, shape, order))

    @staticmethod
    def _dtype(descr: object, *_: object) -> _Dtype:
        """``numpy.dtype(descr, align, copy)``: a plain dtype, whose state BUILD checks."""
        return _Dtype(descr)

    @staticmethod
    def _latin1_encode(text: object, encoding: object) -> bytes:
        """``_codecs.encode`` restricted to latin-1: how protocol-2 pickles from Python 3 store bytes."""
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise UnsafePickleError(f"_codecs.encode with encoding {_short(encoding)} refused: only latin1 is allowed")
        return text.encode("latin1")


def _short(value: object) -> str:
    """``repr(value)`` cut to 80 characters, for messages about untrusted content."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class VerificationBin:
    """Decoded verification pairs: ``images[2k]`` and ``images[2k + 1]`` form pair ``k``.

    Attributes:
        images: RGB uint8 (H, W, 3) images, two per pair.
        issame: Per pair, whether both images show the same identity.
    """

    images: list[np.ndarray]
    issame: list[bool]

    def __len__(self) -> int:
        return len(self.issame)


def load_verification_bin(path: str | Path, expected_size: tuple[int, int] | None = None) -> VerificationBin:
    """Loads and decodes an insightface ``.bin`` verification set (Python 2 or 3 pickles, protocols 0 to 5).

    Args:
        path: The ``.bin`` file.
        expected_size: If given, the (H, W) every image must have.

    Raises:
        FileNotFoundError: If the file is missing.
        UnsafePickleError: If the pickle references any global outside numpy array reconstruction, or
            asks for a dtype other than plain ``uint8``/``bool`` or an array state that does not match it.
        DataFileError: If the file is not a pickle, or the content is not ``(bins, issame)`` with two
            images (bytes or uint8 arrays) per pair and a bool per pair.
        CorruptImageError: If an image cannot be decoded (source ``path[k]``).
        ImageSizeError: If ``expected_size`` is given and an image has another size.
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
    """An encoded image of ``bins``: ``bytes`` or a uint8 array."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, _Array) and data.array is not None and data.array.dtype == np.uint8:
        return data.array
    raise DataFileError(f"{source}: expected JPEG bytes or a uint8 array, got {_kind(data)}")


def _flags(issame: tuple | list | _Array, path: Path) -> list[bool]:
    """``issame`` as bools: a list of bools (or 0/1), or a 1-D bool array."""
    if isinstance(issame, _Array):
        if issame.array is None or issame.array.dtype != np.bool_ or issame.array.ndim != 1:
            raise DataFileError(f"{path}: issame must be a list of bools or a 1-D bool array, got {_kind(issame)}")
        return issame.array.tolist()
    for index, flag in enumerate(issame):
        if type(flag) not in (bool, int) or flag not in (0, 1):
            raise DataFileError(f"{path}: issame[{index}] must be a bool (True/False or 1/0), got {_kind(flag)}")
    return [bool(flag) for flag in issame]


def _kind(value: object) -> str:
    """A short description of an unpickled item: its type, or an array's dtype and shape."""
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
    """Writes an insightface ``.bin``: ``(list of bytes, list of bool)``, pickle protocol 4.

    Raises:
        ValueError: If there are not exactly two images per pair.
    """
    if len(jpeg_buffers) != 2 * len(issame):
        raise ValueError(f"{len(jpeg_buffers)} images for {len(issame)} pairs; expected two images per pair")
    bins = [bytes(buffer) if isinstance(buffer, bytes) else buffer.tobytes() for buffer in jpeg_buffers]
    with Path(path).open("wb") as file:
        pickle.dump((bins, [bool(flag) for flag in issame]), file, protocol=4)
