"""A training dataset over an MXNet ``train.rec`` / ``train.idx`` pair (insightface or im2rec).

insightface layout: record 0 is a header (``flag > 0``, no payload) whose label ``(a, b)`` says that keys
``1 .. a-1`` are images and keys ``a .. b-1`` are identity records (label = that identity's image
key range); identity records are not images. Without such a header (plain ``im2rec`` files) every
key is an image (also with ``im2rec --pack-label``). The class of an image is its first label.
"""

from __future__ import annotations

import numpy as np

from facerec.data.decode import decode_image
from facerec.data.identity_images import IdentityImages
from facerec.data.recordio import RecordReader, unpack


class RecordDataset(IdentityImages):
    """Images and class labels from ``root/train.rec`` + ``root/train.idx``.

    Labels are read from the record headers only (no image is decoded at construction). Safe to use
    with several DataLoader workers: each process opens its own file handle. ``root`` is the folder
    holding ``train.rec`` and ``train.idx``; the other arguments are
    :class:`~facerec.data.identity_images.IdentityImages`'.

    Attributes:
        labels: The class of every sample, in sample order.
        num_classes: Number of classes (identity records count when present, else max label + 1).
        class_names: ``str(i)`` for every class index.
    """

    def index_samples(self) -> None:
        """Reads the image keys and each one's label from the record headers."""
        self.reader = RecordReader(self.root / "train.rec", self.root / "train.idx")
        self.keys, identity_count = self._image_keys()
        self.labels = [self.reader.read_header(key).class_label for key in self.keys]
        if any(label < 0 for label in self.labels):
            raise ValueError(f"{self.reader.rec_path}: negative class label {min(self.labels)}")
        self.num_classes = max(identity_count, max(self.labels, default=-1) + 1)
        self.class_names = [str(index) for index in range(self.num_classes)]

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

    def describe(self, index: int) -> str:
        """``sample <index>, record key <key>``."""
        return f"sample {index}, record key {self.keys[index]}"

    def load(self, index: int) -> np.ndarray:
        """Decodes the image record of sample ``index``."""
        key = self.keys[index]
        source = self.reader.source(key)
        _, payload = unpack(self.reader.read(key), source)
        return decode_image(payload, source=source, expected_size=self.expected_size)
