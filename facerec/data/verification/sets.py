"""Verification sets: unique images plus the pairs that compare them.

Two sources, both giving a :class:`VerificationSet`: an LFW-style ``pairs.txt`` with an image
folder (``data.val_sets.<name>.pairs`` + ``.images``), or an insightface ``.bin``
(``data.val_sets.<name>.bin``), whose pair ``k`` is images ``2k`` and ``2k + 1``.
"""

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
    """A pair protocol over a list of unique images.

    Attributes:
        name: Set name, used in metric keys (``val/<name>/accuracy``).
        images: Image paths (or decoded RGB uint8 (H, W, 3) arrays), each once.
        pairs: (P, 2) int array of indices into ``images``, file order preserved.
        issame: (P,) bool array.
        folds: The protocol's own fold count (the ``folds`` of a ``pairs.txt`` header ``folds n``,
            at least 2), which scoring uses instead of ``callbacks.verification.n_folds``; ``None``
            for an insightface ``.bin``, a single-count header or a one-fold file.
    """

    name: str
    images: list[Path] | list[np.ndarray]
    pairs: np.ndarray
    issame: np.ndarray
    folds: int | None = None

    def __len__(self) -> int:
        return len(self.issame)


def load_pairs_set(name: str, pairs: str | Path, images: str | Path, drop_missing: bool = False) -> VerificationSet:
    """Reads a ``pairs.txt`` protocol whose images live under ``images``.

    Args:
        name: Set name.
        pairs: The ``pairs.txt`` file.
        images: Root the relative image paths of the pairs file are resolved against.
        drop_missing: Drop the pairs with a missing image (with a warning saying how many) instead of
            raising. The folds then no longer hold the published pairs, so accuracies are not
            comparable with other results on the set.

    The set keeps the fold count of a ``folds n`` header (with ``drop_missing`` too: the folds are
    then contiguous blocks of the kept pairs).

    Raises:
        FileNotFoundError: If the pairs file, or (unless ``drop_missing``) any image it names, is
            missing; the message names the first missing files and how many there are.
        ValueError: If the pairs file is malformed (see :func:`facerec.data.verification.pairs.read_pairs`), or
            ``drop_missing`` leaves no pair.
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
    """Reads an insightface ``.bin``; its images are decoded once, here.

    Args:
        name: Set name.
        path: The ``.bin`` file.
        expected_size: If given, the (H, W) every image must have.

    Raises:
        See :func:`facerec.data.verification.bin.load_verification_bin`.
    """
    content = load_verification_bin(path, expected_size)
    pairs = np.arange(2 * len(content), dtype=np.int64).reshape(-1, 2)
    return VerificationSet(name, content.images, pairs, np.asarray(content.issame, dtype=bool))


def load_verification_set(
    name: str, options: Mapping[str, Any], expected_size: tuple[int, int] | None = None
) -> VerificationSet:
    """Loads ``data.val_sets.<name>``: either ``{pairs, images[, drop_missing]}`` or ``{bin}``.

    Args:
        name: Set name.
        options: The config entry.
        expected_size: If given (``data.strict_size``), the (H, W) of every ``.bin`` image; folder
            images are checked when read (see :class:`VerificationImages`).

    Raises:
        ValueError: If the keys are neither form.
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
    """Images (those of a :class:`VerificationSet`, or any others) as ``(transform(image), index)``.

    Args:
        images: Image files, or decoded RGB uint8 (H, W, 3) arrays (``VerificationSet.images``).
        transform: Called as ``transform(image=rgb_uint8)["image"]`` (albumentations style).
        expected_size: If given, the (H, W) every image read from a file must have.
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
