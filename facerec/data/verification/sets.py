"""Verification sets (unique images + pairs) from a ``pairs.txt`` with an image folder, or an insightface ``.bin``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from facerec.data.decode import read_image
from facerec.data.verification.bin import load_verification_bin
from facerec.data.verification.pairs import read_pairs

log = logging.getLogger(__name__)

PAIRS_OPTIONS = frozenset({"pairs", "images", "drop_missing"})
BIN_OPTIONS = frozenset({"bin"})


@dataclass
class VerificationSet:
    """A pair protocol over unique images.

    Attributes:
        name: Used in metric keys (``val/<name>/accuracy``).
        images: Paths, or decoded RGB uint8 (H, W, 3) arrays, each once.
        pairs: (P, 2) int64 indices into ``images``, file order.
        issame: (P,) bool.
        folds: A ``folds n`` header's count (>= 2), used instead of ``callbacks.verification.n_folds``; else None.
    """

    name: str
    images: list[Path] | list[np.ndarray]
    pairs: np.ndarray
    issame: np.ndarray
    folds: int | None = None

    def __len__(self) -> int:
        return len(self.issame)


def load_pairs_set(name: str, pairs: str | Path, images: str | Path, drop_missing: bool = False) -> VerificationSet:
    """Reads a ``pairs.txt`` protocol with images under ``images``; keeps a ``folds n`` header's fold count.

    Args:
        name: Set name.
        pairs: The ``pairs.txt``.
        images: Root of the relative image paths.
        drop_missing: Drop pairs with a missing image (warned; folds then differ from the published ones).

    Raises:
        FileNotFoundError: Missing pairs file, or (unless ``drop_missing``) images; names the first ones.
        ValueError: Malformed pairs file (:func:`~facerec.data.verification.pairs.read_pairs`), or no pair left.
    """
    protocol = read_pairs(pairs)
    root = Path(images)
    unique = dict.fromkeys(protocol.left + protocol.right)
    missing = [path for path in unique if not (root / path).is_file()]
    if missing and not drop_missing:
        shown = ", ".join(str(root / path) for path in missing[:3])
        raise FileNotFoundError(
            f"verification set {name!r}: {len(missing)} of {len(unique)} images named in {pairs} are missing "
            f"(e.g. {shown}); check data.val_sets.{name}.images, or set data.val_sets.{name}.drop_missing=true "
            "to drop their pairs"
        )
    absent = set(missing)
    kept = [
        (left, right, same)
        for left, right, same in zip(protocol.left, protocol.right, protocol.issame, strict=True)
        if left not in absent and right not in absent
    ]
    if missing:
        if not kept:
            raise ValueError(f"verification set {name!r}: every pair of {pairs} has a missing image under {root}")
        log.warning(
            "verification set %r: dropped %d of %d pairs whose images are missing under %s "
            "(drop_missing=true: folds are no longer comparable with published results)",
            name,
            len(protocol) - len(kept),
            len(protocol),
            root,
        )
    used = [left for left, _, _ in kept] + [right for _, right, _ in kept]
    paths = {path: index for index, path in enumerate(dict.fromkeys(used))}
    index = np.array([[paths[left], paths[right]] for left, right, _ in kept], dtype=np.int64)
    issame = np.array([same for _, _, same in kept], dtype=bool)
    folds = protocol.folds if protocol.folds is not None and protocol.folds > 1 else None
    return VerificationSet(name, [root / path for path in paths], index, issame, folds)


def load_bin_set(name: str, path: str | Path, expected_size: tuple[int, int] | None = None) -> VerificationSet:
    """Reads an insightface ``.bin``, decoding its images; raises as ``load_verification_bin``."""
    content = load_verification_bin(path, expected_size)
    pairs = np.arange(2 * len(content), dtype=np.int64).reshape(-1, 2)
    return VerificationSet(name, content.images, pairs, np.asarray(content.issame, dtype=bool))


def load_verification_set(
    name: str, options: Mapping[str, Any], expected_size: tuple[int, int] | None = None
) -> VerificationSet:
    """Loads ``data.val_sets.<name>``: ``{pairs, images[, drop_missing]}`` or ``{bin}``.

    ``expected_size`` (``data.strict_size``) checks ``.bin`` images here, folder images when read.
    Raises ValueError for other keys.
    """
    keys = set(options)
    if keys == BIN_OPTIONS:
        return load_bin_set(name, options["bin"], expected_size)
    if {"pairs", "images"} <= keys <= PAIRS_OPTIONS:
        return load_pairs_set(name, **options)
    raise ValueError(
        f"data.val_sets.{name} has keys {sorted(keys)}: give either 'pairs' and 'images' (optionally "
        "'drop_missing') for a pairs.txt protocol, or only 'bin' for an insightface .bin file"
    )


class VerificationImages(Dataset):
    """``(transform(image), index)`` over image files or RGB uint8 (H, W, 3) arrays.

    ``transform(image=rgb_uint8)["image"]`` (albumentations style); ``expected_size`` checks file images.
    """

    def __init__(
        self,
        images: Sequence[Path] | Sequence[np.ndarray],
        transform: Callable[..., dict[str, Any]],
        expected_size: tuple[int, int] | None = None,
    ) -> None:
        self.images = images
        self.transform = transform
        self.expected_size = expected_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = self.images[i]
        image = image if isinstance(image, np.ndarray) else read_image(image, self.expected_size)
        return self.transform(image=image)["image"], i
