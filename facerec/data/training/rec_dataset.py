"""Training dataset over an MXNet ``train.rec`` / ``train.idx`` (insightface or im2rec); the class is the first label.

insightface: header record 0 (``flag > 0``, no payload, label ``(a, b)``): keys 1..a-1 images, a..b-1 identities.
"""

from __future__ import annotations

import numpy as np

from facerec.data.decode import decode_image
from facerec.data.training.identity_images import IdentityImages
from facerec.data.training.recordio import RecordIOError, RecordReader, unpack

MAX_LABEL = 1 << 24
"""Float32 header labels represent every integer only below 2**24."""


class RecordDataset(IdentityImages):
    """Images and labels from ``root/train.rec`` + ``train.idx``; labels read from headers only; worker-safe.

    Other args as :class:`~facerec.data.training.identity_images.IdentityImages`.

    Raises:
        RecordIOError: Malformed file, a label not an integer in [0, 2**24), or header key ranges past the index.

    Attributes:
        num_classes: Identity record count if present, else max label + 1.
        class_names: ``str(i)`` per class.
    """

    def index_samples(self) -> None:
        """Reads the image keys and their labels from the record headers."""
        self.reader = RecordReader(self.root / "train.rec", self.root / "train.idx")
        self.keys, identity_count = self._image_keys()
        self.labels = [self._class_label(key) for key in self.keys]
        self.num_classes = max(identity_count, max(self.labels, default=-1) + 1)
        self.class_names = [str(index) for index in range(self.num_classes)]

    def _class_label(self, key: int) -> int:
        header = self.reader.read_header(key)
        label = float(header.label if header.flag == 0 else header.label[0])
        where = f"(record key {key}, {self.reader.source(key)})"
        if label < 0:
            raise RecordIOError(f"{self.reader.rec_path}: negative class label {label:g} {where}")
        if not (label.is_integer() and label < MAX_LABEL):
            raise RecordIOError(
                f"{self.reader.rec_path}: class label {label:g} {where} is not an integer in [0, {MAX_LABEL})"
            )
        return int(label)

    def _image_keys(self) -> tuple[list[int], int]:
        if 0 in self.reader.offsets:
            header, payload = unpack(self.reader.read(0), self.reader.source(0))
            if header.flag > 0 and not payload:
                first_identity, end = float(header.label[0]), float(header.label[-1])
                if not (first_identity.is_integer() and end.is_integer() and 1 <= first_identity <= end):
                    raise RecordIOError(
                        f"{self.reader.source(0)}: header record 0 has label ({first_identity:g}, {end:g}); "
                        "expected integers 1 <= a <= b (image keys 1..a-1, identity records a..b-1)"
                    )
                first_identity, end = int(first_identity), int(end)
                present = sum(1 for key in self.reader.offsets if 1 <= key < first_identity)
                if present < first_identity - 1:
                    missing = next(key for key in range(1, first_identity) if key not in self.reader.offsets)
                    raise RecordIOError(
                        f"{self.reader.idx_path}: header record 0 announces image keys "
                        f"1..{first_identity - 1}, but {first_identity - 1 - present} are missing from the index "
                        f"(first: {missing})"
                    )
                if end > len(self.reader.offsets):
                    raise RecordIOError(
                        f"{self.reader.source(0)}: header record 0 announces identity records "
                        f"{first_identity}..{end - 1}, past the {len(self.reader.offsets)} keys of the index"
                    )
                return list(range(1, first_identity)), end - first_identity
        return self.reader.keys, 0

    def describe(self, index: int) -> str:
        """``sample <index>, record key <key>``."""
        return f"sample {index}, record key {self.keys[index]}"

    def load(self, index: int) -> np.ndarray:
        """Decodes the image of sample ``index``."""
        key = self.keys[index]
        source = self.reader.source(key)
        _, payload = unpack(self.reader.read(key), source)
        return decode_image(payload, source=source, expected_size=self.expected_size)
