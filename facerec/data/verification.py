"""Verification sets: unique images plus the pairs that compare them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from facerec.data.decode import read_image
from facerec.data.pairs import read_pairs


@dataclass
class VerificationSet:
    """A pair protocol over a list of unique images.

    Attributes:
        name: Set name, used in metric keys (``val/<name>/accuracy``).
        images: Image paths (or decoded RGB uint8 arrays), each once.
        pairs: (P, 2) int array of indices into ``images``, file order preserved.
        issame: (P,) bool array.
    """

    name: str
    images: list
    pairs: np.ndarray
    issame: np.ndarray

    def __len__(self) -> int:
        return len(self.issame)


def load_pairs_set(name: str, pairs: str | Path, images: str | Path) -> VerificationSet:
    """Reads a ``pairs.txt`` protocol whose images live under ``images``.

    Raises:
        FileNotFoundError: If the pairs file or any image it names is missing; the message names
            the first missing files and how many there are.
    """
    protocol = read_pairs(pairs)
    root = Path(images)
    unique: dict[str, int] = {}
    for path in protocol.left + protocol.right:
        unique.setdefault(path, len(unique))
    missing = [path for path in unique if not (root / path).is_file()]
    if missing:
        shown = ", ".join(str(root / path) for path in missing[:3])
        raise FileNotFoundError(
            f"verification set {name!r}: {len(missing)} of {len(unique)} images named in {pairs} are missing "
            f"(e.g. {shown}); check data.val_sets.{name}.images"
        )
    index = np.array([[unique[a], unique[b]] for a, b in zip(protocol.left, protocol.right, strict=True)])
    return VerificationSet(name, [root / path for path in unique], index, np.asarray(protocol.issame, dtype=bool))


class VerificationImages(Dataset):
    """The images of a :class:`VerificationSet` as ``(transform(image), index)``."""

    def __init__(self, verification_set: VerificationSet, transform: Callable) -> None:
        self.images = verification_set.images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        image = image if isinstance(image, np.ndarray) else read_image(image)
        return self.transform(image=image)["image"], i
