"""The one decode path: channel order, grayscale, alpha and every accepted file format.

Images are written with Pillow, an encoder independent of OpenCV, so a BGR/RGB swap in
``facerec.data.decode`` fails here.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facerec.data.decode import IMAGE_EXTENSIONS, CorruptImageError, decode_image, encode_jpeg, read_image

RED = (255, 0, 0)


def pattern() -> np.ndarray:
    """A 6x8 RGB image, one value per channel and a ramp along the columns: a swap or transpose shows."""
    image = np.empty((6, 8, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 250, np.arange(8) * 30, 5
    return image


PATTERN = pattern()


def pillow_bytes(image: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("file_format", "options"),
    [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True}), ("PPM", {})],
)
def test_lossless_colour_formats_decode_to_rgb(file_format, options):
    data = pillow_bytes(Image.fromarray(PATTERN, "RGB"), file_format, **options)
    decoded = decode_image(data)
    assert decoded.dtype == np.uint8 and decoded.shape == (6, 8, 3)
    np.testing.assert_array_equal(decoded, PATTERN)


@pytest.mark.parametrize(("file_format", "options"), [("JPEG", {"quality": 95}), ("WEBP", {"quality": 90})])
def test_pure_red_lossy_image_is_red_not_blue(file_format, options):
    data = pillow_bytes(Image.new("RGB", (12, 10), RED), file_format, **options)
    decoded = decode_image(data).astype(int)
    assert decoded.shape == (10, 12, 3)
    assert (decoded[..., 0] > 240).all() and (decoded[..., 1:] < 15).all()


@pytest.mark.parametrize("suffix", [".png", ".pgm", ".jpg"])
def test_grayscale_becomes_three_identical_channels(tmp_path, suffix):
    gray = np.tile(np.arange(0, 240, 30, dtype=np.uint8), (5, 1))
    Image.fromarray(gray, "L").save(tmp_path / f"gray{suffix}")
    decoded = read_image(tmp_path / f"gray{suffix}")
    assert decoded.shape == (5, 8, 3) and decoded.dtype == np.uint8
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()
    if suffix != ".jpg":
        np.testing.assert_array_equal(decoded[..., 0], gray)


def test_rgba_drops_alpha_and_keeps_the_colour():
    rgba = np.dstack([PATTERN, np.tile(np.arange(8, dtype=np.uint8) * 36, (6, 1))])
    decoded = decode_image(pillow_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert decoded.shape == (6, 8, 3)
    np.testing.assert_array_equal(decoded, PATTERN)


def test_every_listed_extension_is_readable(tmp_path):
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".pgm": "PPM", ".webp": "WEBP"}
    assert set(formats) == set(IMAGE_EXTENSIONS)
    for suffix, file_format in formats.items():
        mode = "L" if suffix == ".pgm" else "RGB"
        Image.new(mode, (7, 4), 200 if mode == "L" else RED).save(tmp_path / f"x{suffix}", format=file_format)
        assert read_image(tmp_path / f"x{suffix}").shape == (4, 7, 3), suffix


def test_sixteen_bit_image_keeps_its_brightness():
    """A dark 16-bit PNG stays dark: 0..65535 maps to 0..255, not the image's own maximum to 255."""
    grey = np.full((4, 4), 1000, dtype=np.uint16)
    grey[0, 0] = 2000
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    image = decode_image(buffer.getvalue(), "dark.png")
    assert image.dtype == np.uint8 and image.shape == (4, 4, 3)
    assert image[1, 1].tolist() == [4, 4, 4] and image[0, 0].tolist() == [8, 8, 8]


def test_uint8_array_input_as_in_bin_files():
    data = pillow_bytes(Image.fromarray(PATTERN, "RGB"), "PNG")
    np.testing.assert_array_equal(decode_image(np.frombuffer(data, np.uint8)), PATTERN)


def test_encode_jpeg_takes_rgb():
    decoded = np.asarray(Image.open(io.BytesIO(encode_jpeg(np.full((8, 8, 3), RED, np.uint8)))).convert("RGB"))
    assert (decoded[..., 0] > 240).all() and (decoded[..., 1:] < 15).all()


def test_undecodable_input_names_its_source(tmp_path):
    with pytest.raises(CorruptImageError, match=r"cannot decode image faces\.rec@42 \(7 bytes\)"):
        decode_image(b"garbage", source="faces.rec@42")
    with pytest.raises(CorruptImageError, match=r"cannot decode image <bytes> \(0 bytes\)"):
        decode_image(b"")
    (tmp_path / "bad.png").write_bytes(pillow_bytes(Image.new("RGB", (4, 4)), "PNG")[:20])
    with pytest.raises(CorruptImageError, match=r"bad\.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match=r"image not found: .*nope\.jpg"):
        read_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    """A JPEG stored as a phone stores it (pixels turned, EXIF saying how) decodes upright."""
    upright = np.zeros((24, 16, 3), np.uint8)
    upright[:8, :8] = (255, 0, 0)  # a red block at the top left: every turn and mirror moves it
    stored = {
        1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1],
        5: upright.swapaxes(0, 1), 6: np.rot90(upright, 1), 7: np.rot90(upright, 2).swapaxes(0, 1),
        8: np.rot90(upright, -1),
    }[orientation]  # fmt: skip
    exif = Image.Exif()
    exif[0x0112] = orientation
    file = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(file, "JPEG", quality=100, exif=exif)
    decoded = decode_image(file.getvalue())
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(int) - upright).mean() < 3


def test_image_announcing_too_many_pixels_is_a_corrupt_image_error():
    data = bytearray(encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    size = data.find(b"\xff\xc0") + 5  # the frame header's height and width
    data[size : size + 4] = (60000).to_bytes(2, "big") * 2
    with pytest.raises(CorruptImageError, match=r"cannot decode image v\.bin\[3\] \(\d+ bytes\): OpenCV refused it"):
        decode_image(bytes(data), source="v.bin[3]")


def test_exif_of_an_image_pillow_calls_a_decompression_bomb_is_ignored(monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6
    file = io.BytesIO()
    Image.fromarray(np.zeros((24, 16, 3), np.uint8)).save(file, "JPEG", exif=exif)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 24x16 is then over twice the limit: Pillow raises
    assert decode_image(file.getvalue()).shape == (24, 16, 3)
