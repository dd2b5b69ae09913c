"""albumentations pipelines: shapes, dtype, channel order and the [-1, 1] normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerec.data.transforms import AUGMENTATIONS, eval_transform, train_transform

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
