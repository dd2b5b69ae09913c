"""insightface ``.bin`` verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A ``.bin`` file is a pickle of ``(bins, issame)``: ``bins`` is a list of encoded images (JPEG
``bytes`` or ``numpy.uint8`` arrays), images ``2k`` and ``2k + 1`` form pair ``k`` and
``issame[k]`` says whether they show the same person. Pickles can run arbitrary code, so files are
loaded with an unpickler that only resolves the few globals these files need.
"""

from __future__ import annotations

import codecs
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.data.decode import decode_image
from facerec.errors import DataFileError


class UnsafePickleError(DataFileError, pickle.UnpicklingError):
    """A pickle references a global that a verification ``.bin`` never needs."""


def _latin1_encode(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` restricted to latin-1: how protocol-2 pickles from Python 3 store bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} refused: only latin1 is allowed")
    return codecs.encode(text, "latin1")


def _frombuffer(
    buffer: bytes | bytearray | memoryview,
    dtype: np.dtype,
    shape: tuple[int, ...],
    order: str,
    axis_order: tuple[int, ...] | None = None,
) -> np.ndarray:
    """numpy's ``_frombuffer``, how protocol-5 pickles store arrays (numpy itself refuses object dtypes here)."""
    array = np.frombuffer(buffer, dtype=dtype)
    if order == "K" and axis_order is not None:
        return array.reshape(shape, order="C").transpose(axis_order)
    return array.reshape(shape, order=order)


# numpy's array-reconstruction function, found without importing the deprecated ``numpy.core``.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED``; nothing else in the file can be called."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UnsafePickleError(
            f"{self._path}: refused to load global {module}.{name}: a verification .bin only needs numpy "
            "arrays, bytes, lists and bools (the file may be malicious or not a verification set)"
        )


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
    """Loads and decodes an insightface ``.bin`` verification set (Python 2 or 3 pickles).

    Args:
        path: The ``.bin`` file.
        expected_size: If given, the (H, W) every image must have.

    Raises:
        FileNotFoundError: If the file is missing.
        UnsafePickleError: If the pickle references any global outside numpy array reconstruction.
        ValueError: If the content is not ``(bins, issame)`` with two images per pair.
        CorruptImageError: If an image cannot be decoded (source ``path[k]``).
        ImageSizeError: If ``expected_size`` is given and an image has another size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification .bin not found: {path}")
    with path.open("rb") as file:
        try:
            content = _RestrictedUnpickler(file, path).load()
        except UnsafePickleError:
            raise
        except Exception as error:
            raise ValueError(f"{path}: not a readable pickle: {error}") from None
    sequences = tuple | list | np.ndarray
    if not (isinstance(content, tuple | list) and len(content) == 2 and all(isinstance(x, sequences) for x in content)):
        raise ValueError(f"{path}: expected a pickled (bins, issame) pair of lists, got {_describe(content)}")
    bins, issame = content
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs; expected two images per pair")
    for index, data in enumerate(bins):
        if not (isinstance(data, bytes) or (isinstance(data, np.ndarray) and data.dtype == np.uint8)):
            kind = f"{type(data).__name__} {getattr(data, 'dtype', '')}".strip()
            raise ValueError(f"{path}[{index}]: expected JPEG bytes or a uint8 array, got {kind}")
    images = [
        decode_image(data, source=f"{path}[{index}]", expected_size=expected_size) for index, data in enumerate(bins)
    ]
    return VerificationBin(images, [bool(flag) for flag in issame])


def _describe(content: object) -> str:
    if isinstance(content, tuple | list):
        return f"{type(content).__name__} of {', '.join(type(item).__name__ for item in content)}"
    return type(content).__name__


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
