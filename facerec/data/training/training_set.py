"""The training-set formats behind ``data.format``: identity folders and insightface ``.rec`` files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from facerec.data.training.folder import IdentityFolderDataset
from facerec.data.training.identity_images import IdentityImages
from facerec.data.training.rec_dataset import RecordDataset

TRAINING_FORMATS: dict[str, type[IdentityImages]] = {
    "folder": IdentityFolderDataset,
    "rec": RecordDataset,
}


def open_training_set(
    root: str | Path,
    format: str = "folder",
    transform: Callable[..., dict[str, Any]] | None = None,
    skip_corrupt: bool = False,
    expected_size: tuple[int, int] | None = None,
) -> IdentityImages:
    """Opens a ``folder`` or ``rec`` (``train.rec`` + ``.idx``) training set, labels only; ValueError for others."""
    if format not in TRAINING_FORMATS:
        raise ValueError(f"unknown data.format {format!r}; choose one of {', '.join(TRAINING_FORMATS)}")
    return TRAINING_FORMATS[format](root, transform, skip_corrupt, expected_size)
