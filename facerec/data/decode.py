"""The one image decode path (folders, .rec, .bin): RGB uint8 (H, W, 3), EXIF orientation applied.

Grayscale becomes 3 channels, alpha is dropped, 16-bit is scaled to 0..255.
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facerec.errors import DataFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp")
EXIF_ORIENTATION = 0x0112


class CorruptImageError(DataFileError):
    """An image that cannot be decoded; the message names its source."""


def corrupt_image_fix(root: str | Path) -> str:
    """Error-message hint for undecodable training images under ``root``."""
    return (
        f"run `python -m facerec.data check {shlex.quote(str(root))}` to list every unreadable image, or set "
        "data.skip_corrupt=true to replace them by another image of the same identity (logged)"
    )


class ImageSizeError(ValueError):
    """An image not of the size ``data.strict_size`` requires; the message names its source."""


ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda image: image,
    2: lambda image: image[:, ::-1],  # mirrored left-right
    3: lambda image: image[::-1, ::-1],  # rotated 180°
    4: lambda image: image[::-1],  # mirrored top-bottom
    5: lambda image: image.swapaxes(0, 1),  # transposed
    6: lambda image: np.rot90(image, -1),  # shown after a 90° clockwise turn
    7: lambda image: np.rot90(image, 2).swapaxes(0, 1),  # transversed
    8: lambda image: np.rot90(image, 1),  # shown after a 90° counter-clockwise turn
}
"""EXIF orientation -> function making the stored pixels upright (OpenCV's ``IMREAD_UNCHANGED`` ignores it)."""


def exif_orientation(buffer: np.ndarray) -> int:
    """EXIF orientation (1–8, 1 = upright) of encoded bytes; 1 without EXIF or for unknown values."""
    head = buffer[:65536].tobytes()
    if b"Exif\x00\x00" not in head:
        return 1
    try:
        with Image.open(io.BytesIO(buffer.tobytes())) as image:
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 1
    return orientation if orientation in ORIENT else 1


def decode_image(
    data: bytes | np.ndarray, source: str = "<bytes>", expected_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decodes encoded image bytes (JPEG, PNG, ...) to RGB uint8 (H, W, 3).

    Args:
        data: Encoded file contents.
        source: Origin for error messages (path, ``file.rec@offset``).
        expected_size: (H, W) the image must have, or None.

    Raises:
        CorruptImageError: Not a decodable image.
        ImageSizeError: Size differs from ``expected_size``.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data.reshape(-1)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    except cv2.error as error:  # e.g. a header announcing more than CV_IO_MAX_IMAGE_PIXELS
        raise CorruptImageError(
            f"cannot decode image {source} ({buffer.size} bytes): OpenCV refused it ({error.err})"
        ) from None
    if image is None:
        raise CorruptImageError(f"cannot decode image {source} ({buffer.size} bytes): corrupt or not an image")
    image = np.ascontiguousarray(ORIENT[exif_orientation(buffer)](image))
    if expected_size is not None and image.shape[:2] != tuple(expected_size):
        height, width = image.shape[:2]
        raise ImageSizeError(
            f"image {source} is {height}x{width} (HxW), but data.strict_size=true requires "
            f"data.image_size {expected_size[0]}x{expected_size[1]}; resize the dataset or set data.strict_size=false"
        )
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF: keep the brightness, scale the full range to 0..255
        full_scale = np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 1.0
        image = cv2.convertScaleAbs(image, alpha=255.0 / full_scale)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Reads an image file to RGB uint8 (H, W, 3); see :func:`decode_image`.

    Raises FileNotFoundError, CorruptImageError, or ImageSizeError (size is not ``expected_size``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return decode_image(path.read_bytes(), source=str(path), expected_size=expected_size)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """Encodes an RGB uint8 (H, W, 3) image as JPEG bytes."""
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()
