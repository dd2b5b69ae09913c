"""CASIA-WebFace-style training folders: one sub-folder per identity."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from facerec.data.decode import IMAGE_EXTENSIONS, CorruptImageError, read_image

log = logging.getLogger(__name__)


@dataclass
class FolderIndex:
    """What a scan of an identity folder found.

    Attributes:
        class_names: Identity folder names, sorted; label ``i`` is ``class_names[i]``.
        paths: Image paths, grouped by identity.
        labels: Label of each path.
        empty_identities: Identity folders without a single image (not given a label).
        skipped_files: Files that are not images by extension.
    """

    class_names: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    empty_identities: list[str] = field(default_factory=list)
    skipped_files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"{len(self.class_names)} identities, {len(self.paths)} images; skipped "
            f"{len(self.empty_identities)} empty identity folders and {len(self.skipped_files)} non-image files"
        )


def scan_identity_folder(root: str | Path) -> FolderIndex:
    """Lists the images of every identity folder under ``root`` (files at any depth).

    Raises:
        FileNotFoundError: If ``root`` is not a directory.
        ValueError: If it holds no identity with an image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"training folder not found: {root} (expected one sub-folder per identity)")
    index = FolderIndex()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        index.skipped_files += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            index.empty_identities.append(folder.name)
            continue
        index.labels += [len(index.class_names)] * len(images)
        index.class_names.append(folder.name)
        index.paths += images
    if not index.paths:
        raise ValueError(
            f"no images found under {root}: expected {root}/<identity>/<image> with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    return index


class IdentityFolderDataset(Dataset):
    """Training samples ``(transform(image), label)`` from an identity folder.

    Args:
        root: The folder; labels come from its sorted sub-folder names.
        transform: Called as ``transform(image=rgb_uint8)["image"]`` (albumentations style).
        skip_corrupt: Replace an undecodable image by another image of the same identity (with a
            warning) instead of raising.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, skip_corrupt: bool = False) -> None:
        self.index = scan_identity_folder(root)
        log.info("%s: %s", root, self.index.summary())
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.labels = np.asarray(self.index.labels, dtype=np.int64)

    @property
    def class_names(self) -> list[str]:
        """Identity names, label order."""
        return self.index.class_names

    def __len__(self) -> int:
        return len(self.index.paths)

    def __getitem__(self, i: int):
        label = int(self.labels[i])
        try:
            image = read_image(self.index.paths[i])
        except CorruptImageError:
            if not self.skip_corrupt:
                raise
            image = self._substitute(i, label)
        return (self.transform(image=image)["image"] if self.transform else image), label

    def _substitute(self, i: int, label: int) -> np.ndarray:
        log.warning("skipping corrupt image %s", self.index.paths[i])
        for j in np.flatnonzero(self.labels == label):
            if j != i:
                try:
                    return read_image(self.index.paths[j])
                except CorruptImageError:
                    continue
        raise CorruptImageError(f"every image of identity {self.class_names[label]!r} is corrupt")
