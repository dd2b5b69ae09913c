"""Raw-pixel and eigenface baselines: PCA by hand, and eigenfaces that separate what raw pixels confuse."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.data.decode import encode_jpeg
from facerec.data.pixels import pixel_rows
from facerec.data.verification.sets import VerificationSet
from facerec.eval.baseline import eigenface_metrics, fit_pca, raw_pixel_metrics


def test_pca_of_points_on_a_line():
    samples = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    mean, components, scales = fit_pca(samples, n_components=2)
    np.testing.assert_allclose(mean, [1.5, 3.0])
    np.testing.assert_allclose(np.abs(components[0]), np.array([1.0, 2.0]) / np.sqrt(5))
    # Offsets along the line are ±0.5·√5 and ±1.5·√5: variance (2·0.25·5 + 2·2.25·5) / 3 = 25/3.
    np.testing.assert_allclose(scales, [np.sqrt(25 / 3), 0.0], atol=1e-12)


def test_pca_keeps_at_most_the_rank_available():
    _, components, scales = fit_pca(np.random.default_rng(0).normal(size=(3, 10)), n_components=50)
    assert components.shape == (3, 10) and scales.shape == (3,)


def face(identity: int, gradient: float, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 image: faint identity stripes (rows ``identity::4``) under a strong top-to-bottom gradient.

    Both patterns survive the baselines' mirror-image sum, which would cancel anything left-right.
    """
    rows = np.zeros(16)
    rows[identity::4] = 12.0
    rows += np.linspace(-gradient, gradient, 16)
    image = 128 + rows[:, None, None] + rng.normal(0, 1, (16, 16, 1))
    return np.clip(np.repeat(image, 3, axis=2), 0, 255).astype(np.uint8)


@pytest.fixture
def stripes(tmp_path):
    """Training images of 4 identities; pairs where the gradient hides who is who.

    Same pairs have opposite gradients, different pairs equal ones, so raw pixels match the wrong
    pairs; PCA fit on the training images (random gradients) finds the gradient as one component
    and the stripes as three, and whitening weighs them alike.
    """
    rng = np.random.default_rng(0)
    training = []
    for index in range(40):
        path = tmp_path / f"train{index}.png"
        path.write_bytes(encode_jpeg(face(index % 4, rng.uniform(-40, 40), rng), quality=100))
        training.append(path)
    images, pairs, issame = [], [], []
    for k in range(40):
        same = k % 2 == 0
        first, second = k % 4, k % 4 if same else (k + 1) % 4
        images += [face(first, 30, rng), face(second, -30 if same else 30, rng)]
        pairs.append([2 * k, 2 * k + 1])
        issame.append(same)
    return training, VerificationSet("stripes", images, np.array(pairs), np.array(issame))


def test_eigenfaces_fit_on_training_images_beat_raw_pixels(stripes):
    training, val_set = stripes
    pixels, training_pixels = pixel_rows(val_set.images, (16, 16)), pixel_rows(training, (16, 16))
    raw = raw_pixel_metrics(pixels, val_set, n_folds=4)
    eigen = eigenface_metrics(pixels, training_pixels, val_set, n_components=4, whiten=True, n_folds=4)
    assert eigen["accuracy"] > 0.9 and raw["accuracy"] < 0.7


def test_baselines_see_images_as_the_model_does(stripes):
    _, val_set = stripes
    images = val_set.images[:3]
    top_halves = [image[:8] for image in images]
    np.testing.assert_array_equal(pixel_rows(images, (8, 16), crop=(0, 0, 8, 16)), pixel_rows(top_halves, (8, 16)))
    expected = np.stack(
        [(image / 127.5 - 1 + image[:, ::-1] / 127.5 - 1).transpose(2, 0, 1).ravel() for image in images]
    )
    np.testing.assert_allclose(pixel_rows(images, (16, 16)), expected, atol=1e-6)
