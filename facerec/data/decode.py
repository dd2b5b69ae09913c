"""The one image decode path: every source (folders, .rec, .bin) goes through here.

RGB everywhere: images are returned as RGB ``uint8`` arrays of shape (H, W, 3) (OpenCV's BGR is
converted here, once); grayscale becomes 3 channels and an alpha channel is dropped.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp")


class CorruptImageError(ValueError):
    """An image that cannot be decoded; the message names its source."""


class ImageSizeError(ValueError):
    """An image whose size is not the one required (``data.strict_size``); the message names its source."""


def decode_image(
    data: bytes | np.ndarray, source: str = "<bytes>", expected_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decodes an encoded image (JPEG, PNG, ...) to RGB uint8 (H, W, 3).

    Args:
        data: The encoded file contents.
        source: Where the bytes came from, for the error message (a path, ``file.rec@offset``).
        expected_size: If given, the (H, W) the image must have.

    Raises:
        CorruptImageError: If the bytes are not a decodable image.
        ImageSizeError: If ``expected_size`` is given and the image has another size.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data.reshape(-1)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise CorruptImageError(f"cannot decode image {source} ({buffer.size} bytes): corrupt or not an image")
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
    """Reads and decodes an image file to RGB uint8 (H, W, 3).

    Args:
        path: The image file.
        expected_size: If given, the (H, W) the image must have.

    Raises:
        FileNotFoundError: If the file does not exist.
        CorruptImageError: If it cannot be decoded.
        ImageSizeError: If ``expected_size`` is given and the image has another size.
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
