"""Base of the training datasets: ``(transform(image), label)`` samples; an undecodable image raises, naming it,
or with ``skip_corrupt`` is replaced by the next readable image of its identity (warned).
"""

from __future__ import annotations

import logging
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from facerec.data.decode import CorruptImageError, corrupt_image_fix

log = logging.getLogger(__name__)


class IdentityImages(Dataset, ABC):
    """Training samples ``(transform(image), label)``; subclasses implement :meth:`index_samples` and :meth:`load`.

    Args:
        root: Data location (named in messages).
        transform: ``transform(image=rgb_uint8)["image"]`` on the (H, W, 3) image (albumentations style).
        skip_corrupt: Replace an undecodable image by another of its identity instead of raising.
        expected_size: (H, W) every image must have (``data.strict_size``), or None.

    Attributes:
        labels: Class of every sample.
        class_names: Identity names in label order.
    """

    labels: Sequence[int]
    class_names: list[str]

    def __init__(
        self,
        root: str | Path,
        transform: Callable[..., dict[str, Any]] | None = None,
        skip_corrupt: bool = False,
        expected_size: tuple[int, int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.expected_size = expected_size
        self.index_samples()

    @abstractmethod
    def index_samples(self) -> None:
        """Sets :attr:`labels` and :attr:`class_names` without reading images."""

    @abstractmethod
    def load(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) image of sample ``index``; CorruptImageError if undecodable or wrong size."""

    def describe(self, index: int) -> str:
        """How messages name sample ``index``."""
        return f"sample {index}"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        label = int(self.labels[index])
        try:
            image = self.load(index)
        except CorruptImageError as error:
            if not self.skip_corrupt:
                raise CorruptImageError(f"{error} ({self.describe(index)}); {corrupt_image_fix(self.root)}") from error
            image = self._replacement(index, label, error)
        return (self.transform(image=image)["image"] if self.transform else image), label

    def _replacement(self, index: int, label: int, error: CorruptImageError) -> np.ndarray:
        """Next readable image of identity ``label`` after sample ``index`` (wrapping)."""
        same = np.flatnonzero(np.asarray(self.labels) == label)
        start = int(np.searchsorted(same, index))
        for other in (int(i) for i in np.roll(same, -start)[1:]):
            log.warning("skipping corrupt image: %s; using %s of the same identity", error, self.describe(other))
            try:
                return self.load(other)
            except CorruptImageError as next_error:
                error = next_error
        raise CorruptImageError(
            f"every image of identity {self.class_names[label]!r} is corrupt (last: {error}), so none can replace "
            f"{self.describe(index)}; run `python -m facerec.data check {shlex.quote(str(self.root))}` to list "
            "every unreadable image"
        )
