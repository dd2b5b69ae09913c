"""Procedurally drawn synthetic faces: stable per-identity traits plus per-image nuisance (pose, light, occlusion,
noise), so raw pixels verify poorly while a trained network learns identity. Deterministic and cached.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from facerec.data.decode import encode_jpeg
from facerec.data.verification.pairs import write_pairs

GENERATOR_VERSION = 1
_TRAIN, _HELDOUT, _PAIRS = 1, 2, 3


@dataclass(frozen=True)
class SyntheticSpec:
    """What :func:`generate` writes; ``pairs_per_fold`` same pairs per fold (and as many different), square
    ``image_size`` pixels, everything drawn from ``seed``.
    """

    num_identities: int = 300
    images_per_identity: int = 20
    heldout_identities: int = 100
    heldout_images_per_identity: int = 10
    folds: int = 10
    pairs_per_fold: int = 30
    image_size: int = 112
    seed: int = 0


@dataclass(frozen=True)
class Identity:
    """Stable traits of one synthetic person, in a 112-pixel frame."""

    face_axes: tuple[float, float]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_height: float
    fringe: float
    eye_y: float
    eye_spacing: float
    eye_radius: float
    iris: tuple[int, int, int]
    brow_tilt: float
    brow_thickness: int
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    lip: tuple[int, int, int]
    glasses: bool
    beard: bool
    moles: tuple[tuple[float, float], ...]


def _colour(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draws the stable traits of a new identity."""
    skin_tone = rng.uniform(0.3, 1.0)
    skin = (int(90 + 150 * skin_tone), int(60 + 130 * skin_tone), int(40 + 110 * skin_tone))
    return Identity(
        face_axes=(rng.uniform(28, 40), rng.uniform(36, 48)),
        skin=skin,
        hair=_colour(rng, 0, 200),
        hair_height=rng.uniform(6, 22),
        fringe=rng.uniform(-12, 12),
        eye_y=rng.uniform(44, 56),
        eye_spacing=rng.uniform(12, 22),
        eye_radius=rng.uniform(3.0, 6.5),
        iris=_colour(rng, 0, 255),
        brow_tilt=rng.uniform(-4, 4),
        brow_thickness=int(rng.integers(1, 4)),
        nose_length=rng.uniform(8, 18),
        nose_width=rng.uniform(3, 9),
        mouth_y=rng.uniform(78, 88),
        mouth_width=rng.uniform(8, 18),
        lip=_colour(rng, 60, 220),
        glasses=bool(rng.random() < 0.25),
        beard=bool(rng.random() < 0.2),
        moles=tuple((rng.uniform(-0.6, 0.6), rng.uniform(-0.5, 0.7)) for _ in range(int(rng.integers(0, 4)))),
    )


def _point(x: float, y: float) -> tuple[int, int]:
    """Sub-pixel point with 4 fractional bits, as cv2's ``shift=4`` drawing expects."""
    return round(x * 16), round(y * 16)


def _axes(a: float, b: float) -> tuple[int, int]:
    return round(a * 16), round(b * 16)


def render(identity: Identity, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """One RGB uint8 (size, size, 3) image of ``identity`` with fresh nuisance variation."""
    aa, sh = cv2.LINE_AA, 4
    canvas = np.empty((112, 112, 3), np.uint8)
    canvas[:] = _colour(rng, 0, 256)
    cx, cy = 56.0, 62.0
    ax, ay = identity.face_axes
    cv2.ellipse(
        canvas,
        _point(cx, cy - ay + 8),
        _axes(ax + 4, identity.hair_height + 10),
        0,
        180,
        360,
        identity.hair,
        -1,
        aa,
        sh,
    )
    cv2.ellipse(canvas, _point(cx, cy), _axes(ax, ay), 0, 0, 360, identity.skin, -1, aa, sh)
    cv2.ellipse(
        canvas, _point(cx + identity.fringe, cy - ay + 6), _axes(ax * 0.8, 8), 0, 180, 360, identity.hair, -1, aa, sh
    )
    if identity.beard:
        cv2.ellipse(canvas, _point(cx, cy + ay * 0.45), _axes(ax * 0.8, ay * 0.5), 0, 0, 180, identity.hair, -1, aa, sh)
    openness = rng.uniform(0.5, 1.1)
    gaze = rng.uniform(-1.5, 1.5)
    for side in (-1, 1):
        ex = cx + side * identity.eye_spacing
        cv2.ellipse(
            canvas,
            _point(ex, identity.eye_y),
            _axes(identity.eye_radius * 1.6, identity.eye_radius * openness),
            0,
            0,
            360,
            (245, 245, 245),
            -1,
            aa,
            sh,
        )
        cv2.circle(
            canvas, _point(ex + gaze, identity.eye_y), round(identity.eye_radius * 0.8 * 16), identity.iris, -1, aa, sh
        )
        brow_y = identity.eye_y - identity.eye_radius - 5
        cv2.line(
            canvas,
            _point(ex - 7, brow_y + side * identity.brow_tilt / 2),
            _point(ex + 7, brow_y - side * identity.brow_tilt / 2),
            identity.hair,
            identity.brow_thickness,
            aa,
            sh,
        )
        if identity.glasses:
            cv2.circle(
                canvas, _point(ex, identity.eye_y), round((identity.eye_radius + 5) * 16), (20, 20, 20), 2, aa, sh
            )
    nose_top = identity.eye_y + 4
    nose = np.array(
        [
            _point(cx, nose_top),
            _point(cx - identity.nose_width, nose_top + identity.nose_length),
            _point(cx + identity.nose_width, nose_top + identity.nose_length),
        ],
        np.int32,
    )
    shade = tuple(int(c * 0.75) for c in identity.skin)
    cv2.fillConvexPoly(canvas, nose, shade, aa, sh)
    smile = rng.uniform(-3, 5)
    cv2.ellipse(
        canvas,
        _point(cx, identity.mouth_y),
        _axes(identity.mouth_width, abs(smile) + 1.5),
        0,
        0 if smile >= 0 else 180,
        180 if smile >= 0 else 360,
        identity.lip,
        3,
        aa,
        sh,
    )
    for mx, my in identity.moles:
        cv2.circle(canvas, _point(cx + mx * ax, cy + my * ay), 2 * 16, (60, 40, 30), -1, aa, sh)
    image = _nuisance(canvas.astype(np.float32), rng)
    if size != 112:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image


def _nuisance(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Occlusion, pose, lighting, blur, noise: float32 (112, 112, 3) -> uint8."""
    if rng.random() < 0.35:
        x0, y0 = rng.integers(0, 90, size=2)
        w, h = rng.integers(15, 45, size=2)
        image[y0 : y0 + h, x0 : x0 + w] = _colour(rng, 0, 256)
    angle, scale = rng.uniform(-15, 15), rng.uniform(0.88, 1.12)
    matrix = cv2.getRotationMatrix2D((56, 60), angle, scale)
    matrix[:, 2] += rng.uniform(-7, 7, size=2)
    border = tuple(float(v) for v in rng.integers(0, 256, size=3))
    image = cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderValue=border)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(112) - 56) / 56
    gradient = math.cos(direction) * ramp[None, :] + math.sin(direction) * ramp[:, None]
    light = rng.uniform(0.6, 1.3) * (1 + rng.uniform(0, 0.35) * gradient)
    cast = rng.uniform(0.85, 1.15, size=3)
    image = (image - 128) * rng.uniform(0.7, 1.2) + 128
    image = image * light[..., None] * cast
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    image = image + rng.normal(0, rng.uniform(2, 12), size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def identity_name(split: int, index: int) -> str:
    """Folder name of identity ``index``: ``id00042`` for training, ``hid00042`` held out."""
    return f"{'id' if split == _TRAIN else 'hid'}{index:05d}"


def _write_identities(root: Path, split: int, count: int, per_identity: int, spec: SyntheticSpec) -> None:
    for index in range(count):
        rng = np.random.default_rng([spec.seed, split, index])
        identity = sample_identity(rng)
        name = identity_name(split, index)
        folder = root / name
        folder.mkdir(parents=True)
        for number in range(1, per_identity + 1):
            (folder / f"{name}_{number:04d}.jpg").write_bytes(encode_jpeg(render(identity, rng, spec.image_size), 92))


def _pair_folds(spec: SyntheticSpec) -> list:
    rng = np.random.default_rng([spec.seed, _PAIRS])
    people, images = spec.heldout_identities, spec.heldout_images_per_identity
    if people < 2 or images < 2:
        raise ValueError("held-out pairs need at least 2 identities with at least 2 images each")
    folds = []
    for _ in range(spec.folds):
        same, different = [], []
        for _ in range(spec.pairs_per_fold):
            person = int(rng.integers(people))
            a, b = rng.choice(images, size=2, replace=False) + 1
            same.append((identity_name(_HELDOUT, person), int(a), int(b)))
            p, q = rng.choice(people, size=2, replace=False)
            a, b = rng.integers(1, images + 1, size=2)
            different.append((identity_name(_HELDOUT, int(p)), int(a), identity_name(_HELDOUT, int(q)), int(b)))
        folds.append((same, different))
    return folds


def generate(root: str | Path, spec: SyntheticSpec) -> Path:
    """Writes the synthetic dataset under ``root`` unless ``root/spec.json`` matches ``spec``.

    Layout: ``train/<id>/<id>_%04d.jpg`` (training identities), ``heldout/images/<id>/...`` and LFW-style
    10-fold ``heldout/pairs.txt`` (unseen identities), ``spec.json``. Built in a temporary folder renamed into
    place, so concurrent (DDP) or interrupted runs never leave a partial dataset.

    Returns:
        ``root``.
    """
    root = Path(root)
    stamp = {"version": GENERATOR_VERSION, **asdict(spec)}
    if (root / "spec.json").is_file() and json.loads((root / "spec.json").read_text()) == stamp:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _write_identities(staging / "train", _TRAIN, spec.num_identities, spec.images_per_identity, spec)
        _write_identities(
            staging / "heldout" / "images", _HELDOUT, spec.heldout_identities, spec.heldout_images_per_identity, spec
        )
        write_pairs(staging / "heldout" / "pairs.txt", _pair_folds(spec))
        (staging / "spec.json").write_text(json.dumps(stamp, indent=2))
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        try:
            os.rename(staging, root)
        except OSError:
            if not (root / "spec.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
