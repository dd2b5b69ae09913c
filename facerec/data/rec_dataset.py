"""A training dataset over an MXNet ``train.rec`` / ``train.idx`` pair (insightface or im2rec).

insightface layout: record 0 is a header (``flag > 0``, no payload) whose label ``(a, b)`` says that keys
``1 .. a-1`` are images and keys ``a .. b-1`` are identity records (label = that identity's image
key range); identity records are not images. Without such a header (plain ``im2rec`` files) every
key is an image (also with ``im2rec --pack-label``). The class of an image is its first label.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facerec.data.decode import CorruptImageError, corrupt_image_fix, decode_image
from facerec.data.recordio import RecordReader, unpack

logger = logging.getLogger(__name__)


class RecordDataset:
    """Images and class labels from ``root/train.rec`` + ``root/train.idx``.

    Labels are read from the record headers only (no image is decoded at construction). Safe to use
    with several DataLoader workers: each process opens its own file handle.

    Args:
        root: Folder holding ``train.rec`` and ``train.idx``.
        transform: Called as ``transform(image=rgb_uint8)["image"]`` (albumentations style) on the
            RGB uint8 (H, W, 3) image.
        skip_corrupt: Instead of raising on an undecodable image, log a warning and return another
            image of the same identity.
        expected_size: If given, (H, W) every image must have (``data.strict_size``); otherwise
            any size is accepted.

    Attributes:
        labels: The class of every sample, in sample order.
        num_classes: Number of classes (identity records count when present, else max label + 1).
        class_names: ``str(i)`` for every class index.
    """

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
        self.reader = RecordReader(self.root / "train.rec", self.root / "train.idx")
        self.keys, identity_count = self._image_keys()
        self.labels = [self.reader.read_header(key).class_label for key in self.keys]
        if any(label < 0 for label in self.labels):
            raise ValueError(f"{self.reader.rec_path}: negative class label {min(self.labels)}")
        self.num_classes = max(identity_count, max(self.labels, default=-1) + 1)
        self.class_names = [str(index) for index in range(self.num_classes)]
        self._by_class: dict[int, list[int]] = {}
        for index, label in enumerate(self.labels):
            self._by_class.setdefault(label, []).append(index)

    def _image_keys(self) -> tuple[list[int], int]:
        if 0 in self.reader.offsets:
            header, payload = unpack(self.reader.read(0), self.reader.source(0))
            if header.flag > 0 and not payload:
                first_identity, end = int(header.label[0]), int(header.label[-1])
                missing = sorted(set(range(1, first_identity)) - set(self.reader.offsets))
                if missing:
                    raise ValueError(
                        f"{self.reader.idx_path}: header record 0 announces image keys "
                        f"1..{first_identity - 1}, but {len(missing)} are missing from the index "
                        f"(first: {missing[0]})"
                    )
                return list(range(1, first_identity)), max(end - first_identity, 0)
        return self.reader.keys, 0

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        label = self.labels[index]
        try:
            image = self._load(index)
        except CorruptImageError as error:
            if not self.skip_corrupt:
                raise CorruptImageError(
                    f"{error} (sample {index}, record key {self.keys[index]}); {corrupt_image_fix(self.root)}"
                ) from error
            image = self._load_replacement(index, error)
        return (self.transform(image=image)["image"] if self.transform else image), label

    def _load(self, index: int) -> np.ndarray:
        key = self.keys[index]
        source = self.reader.source(key)
        _, payload = unpack(self.reader.read(key), source)
        return decode_image(payload, source=source, expected_size=self.expected_size)

    def _load_replacement(self, index: int, error: CorruptImageError) -> np.ndarray:
        same_class = self._by_class[self.labels[index]]
        start = same_class.index(index)
        for other in same_class[start + 1 :] + same_class[:start]:
            logger.warning("skipping corrupt image: %s; using sample %d of the same identity", error, other)
            try:
                return self._load(other)
            except CorruptImageError as next_error:
                error = next_error
        raise CorruptImageError(
            f"every image of class {self.labels[index]} is corrupt (last: {error}); cannot replace sample {index}; "
            f"run `python -m facerec.data check {shlex.quote(str(self.root))}` to list every unreadable image"
        )
