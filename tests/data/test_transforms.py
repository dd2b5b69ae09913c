"""albumentations pipelines: shapes, dtype, channel order and the [-1, 1] normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerec.data.transforms import AUGMENTATIONS, check_crop, crop_face, eval_transform, train_transform

# R = 255, G = 0, B = 128 everywhere: normalised to 1, -1 and 128 / 127.5 - 1.
COLOUR = np.empty((20, 24, 3), np.uint8)
COLOUR[...] = (255, 0, 128)
EXPECTED = torch.tensor([1.0, -1.0, 128 / 127.5 - 1])


def random_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)


@pytest.mark.parametrize("augment", AUGMENTATIONS)
def test_every_augmentation_gives_a_normalised_float_tensor(augment):
    transform = train_transform((16, 12), augment)
    transform.set_random_seed(0)
    for seed in range(8):
        image = transform(image=random_image(seed))["image"]
        assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
        assert image.shape == (3, 16, 12)
        assert image.min() >= -1 and image.max() <= 1


@pytest.mark.parametrize(
    "transform", [eval_transform((16, 12)), train_transform((16, 12), "none")], ids=["eval", "train-none"]
)
def test_normalisation_of_known_pixels_keeps_rgb_order(transform):
    image = transform(image=COLOUR)["image"]
    torch.testing.assert_close(image, EXPECTED[:, None, None].expand(3, 16, 12), atol=1e-6, rtol=0)


def test_default_flips_horizontally_and_nothing_else():
    image = COLOUR.copy()
    image[:, :12] = 0
    transform = train_transform((20, 24), "default")
    transform.set_random_seed(0)
    outputs = [transform(image=image)["image"] for _ in range(16)]
    left_dark = [bool((output[:, :, :12] == -1).all()) for output in outputs]
    assert any(left_dark) and not all(left_dark)
    unflipped = train_transform((20, 24), "none")(image=image)["image"]
    for output, dark in zip(outputs, left_dark, strict=True):
        torch.testing.assert_close(output, unflipped if dark else unflipped.flip(2))


def test_eval_transform_is_deterministic_and_resizes():
    image = random_image()
    expected = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(eval_transform((20, 24))(image=image)["image"], expected, atol=1e-6, rtol=0)
    assert eval_transform((10, 8))(image=image)["image"].shape == (3, 10, 8)


def test_unknown_augmentation_is_explained():
    with pytest.raises(ValueError, match=r"unknown augmentation 'heavy'; choose one of none, default, strong"):
        train_transform((16, 16), "heavy")


def test_centre_crop_fraction_keeps_the_middle():
    image = np.arange(10 * 20).reshape(10, 20, 1)
    # 0.5 of 10x20 is 5x10, starting at row (10 - 5) // 2 = 2 and column (20 - 10) // 2 = 5.
    np.testing.assert_array_equal(crop_face(image, 0.5), image[2:7, 5:15])
    np.testing.assert_array_equal(crop_face(image, 1.0), image)


def test_pixel_box_crop_and_a_box_that_does_not_fit():
    image = np.arange(10 * 20).reshape(10, 20, 1)
    np.testing.assert_array_equal(crop_face(image, (1, 2, 3, 4)), image[1:4, 2:6])
    with pytest.raises(ValueError, match=r"does not fit a 10x20 \(HxW\) image"):
        crop_face(image, (5, 0, 6, 4))


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        (0.0, r"fraction must be in \(0, 1\]"),
        (1.5, r"fraction must be in \(0, 1\]"),
        (True, "give a centre fraction"),
        ([1, 2, 3], "pixel box"),
        ([0, 0, 2.5, 3], "pixel box"),
        ([-1, 0, 2, 2], "top and left must be >= 0"),
        ([0, 0, 0, 2], "height and width > 0"),
    ],
)
def test_invalid_crops_are_explained(crop, message):
    with pytest.raises(ValueError, match=message):
        check_crop(crop)


def test_training_and_evaluation_crop_before_resizing():
    image = np.zeros((20, 24, 3), np.uint8)
    image[5:15, 6:18] = 255  # the "face": the central half of each side
    expected = torch.ones(3, 8, 8)
    torch.testing.assert_close(eval_transform((8, 8), 0.5)(image=image)["image"], expected)
    torch.testing.assert_close(eval_transform((8, 8), [5, 6, 10, 12])(image=image)["image"], expected)
    torch.testing.assert_close(train_transform((8, 8), "none", 0.5)(image=image)["image"], expected)
    assert eval_transform((8, 8))(image=image)["image"].min() == -1  # without a crop the border stays
