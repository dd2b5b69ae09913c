"""CASIA-WebFace-style identity folders (one sub-folder per identity): the one scan shared by training and
``python -m facerec.data``, so ``folder2rec`` keeps the training labels.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facerec.data.decode import IMAGE_EXTENSIONS, read_image
from facerec.data.training.identity_images import IdentityImages

log = logging.getLogger(__name__)


@dataclass
class FolderIndex:
    """Result of an identity-folder scan.

    Attributes:
        class_names: Sorted NFC names of identity folders with an image; label ``i`` is ``class_names[i]``.
        images: Per label, its image files (any depth), sorted.
        empty_identities: Identity folders without images (no label).
        skipped_files: Non-image files, and files directly in ``root``.
    """

    root: Path
    class_names: list[str] = field(default_factory=list)
    images: list[list[Path]] = field(default_factory=list)
    empty_identities: list[str] = field(default_factory=list)
    skipped_files: list[Path] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        """Every image path, grouped by label."""
        return [path for files in self.images for path in files]

    @property
    def labels(self) -> list[int]:
        """Label of every entry of :attr:`paths`."""
        return [label for label, files in enumerate(self.images) for _ in files]

    def wrong_root_hint(self) -> str | None:
        """Hint that ``root`` is one level too high (one identity holds most images in sub-folders), or None."""
        counts = [len(files) for files in self.images]
        largest = int(np.argmax(counts))
        folder = self.root / self.class_names[largest]
        nested = sum(path.parent != folder for path in self.images[largest])
        if 2 * counts[largest] <= sum(counts) or 2 * nested <= counts[largest]:
            return None
        return (
            f"identity folder {folder} holds {counts[largest]} of the {sum(counts)} images, {nested} of them in "
            f"its sub-folders: if those sub-folders are the identities, use data.root={folder}"
        )

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"{len(self.class_names)} identities, {sum(map(len, self.images))} images; skipped "
            f"{len(self.empty_identities)} empty identity folders and {len(self.skipped_files)} non-image files"
        )


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def list_image_files(root: str | Path) -> list[Path]:
    """Sorted image files (by extension) at any depth below ``root``, hidden entries skipped."""
    root = Path(root)
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and _visible(path, root)
    )


def scan_identity_folder(root: str | Path) -> FolderIndex:
    """Lists the images (``IMAGE_EXTENSIONS``, any depth, hidden paths ignored) of each identity folder under ``root``.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: No identity has an image, or two folder names are equal in Unicode NFC.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"identity folder not found: {root} (expected one sub-folder per identity)")
    index = FolderIndex(root)
    entries = sorted(
        (path for path in root.iterdir() if _visible(path, root)), key=lambda p: unicodedata.normalize("NFC", p.name)
    )
    index.skipped_files += [path for path in entries if path.is_file()]
    for folder in (path for path in entries if path.is_dir()):
        files = sorted(path for path in folder.rglob("*") if path.is_file() and _visible(path, root))
        images = [path for path in files if path.suffix.lower() in IMAGE_EXTENSIONS]
        index.skipped_files += [path for path in files if path.suffix.lower() not in IMAGE_EXTENSIONS]
        name = unicodedata.normalize("NFC", folder.name)
        if images and name in index.class_names:
            raise ValueError(
                f"{root}: two identity folders are both named {name!r} (one spelt with composed, one with "
                "decomposed Unicode accents, as macOS and Linux tools write them): merge them into one folder"
            )
        if images:
            index.class_names.append(name)
            index.images.append(images)
        else:
            index.empty_identities.append(folder.name)
    if not index.images:
        raise ValueError(
            f"no images found under {root}: expected {root}/<identity>/<image> with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    return index


class IdentityFolderDataset(IdentityImages):
    """Training samples ``(transform(image), label)`` from identity folder ``root``; see :class:`IdentityImages`."""

    def index_samples(self) -> None:
        """Scans the folder; warns when it looks one level too high."""
        self.index = scan_identity_folder(self.root)
        log.info("%s: %s", self.root, self.index.summary())
        hint = self.index.wrong_root_hint()
        if hint:
            log.warning(hint)
        self.paths = self.index.paths
        self.labels = np.asarray(self.index.labels, dtype=np.int64)
        self.class_names = self.index.class_names

    def load(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) image at ``paths[index]``."""
        return read_image(self.paths[index], self.expected_size)
