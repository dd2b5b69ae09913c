"""A 1:N search set from identity folders: a gallery, probes searched against it, optional distractors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.data.folder import list_image_files, scan_identity_folder


@dataclass
class SearchSet:
    """The images of a 1:N search and their identities.

    Identity ``k`` is ``identities[k]``; gallery and probe folders of the same name are one identity.

    Attributes:
        identities: Identity names of the gallery and probe folders, sorted.
        gallery_images: Enrolled images; ``gallery_labels`` (same length) their identities.
        probe_images: Images searched for; ``probe_labels`` their identities (enrolled or not).
        distractor_images: Extra gallery images of nobody searched for (MegaFace-style), possibly none.
    """

    identities: list[str]
    gallery_images: list[Path]
    gallery_labels: np.ndarray
    probe_images: list[Path]
    probe_labels: np.ndarray
    distractor_images: list[Path]


def load_search_set(gallery: str | Path, probe: str | Path, distractors: str | Path | None = None) -> SearchSet:
    """Scans the gallery and probe identity folders (one sub-folder per identity) and the distractor folder.

    Args:
        gallery: Identity folder of the enrolled images.
        probe: Identity folder of the probe images; identities missing from the gallery are non-mated probes.
        distractors: A folder of images at any depth (their folders are ignored), or None.

    Raises:
        FileNotFoundError: If a folder does not exist.
        ValueError: If a folder holds no image, or no probe identity is enrolled in the gallery.
    """
    gallery_index, probe_index = scan_identity_folder(gallery), scan_identity_folder(probe)
    identities = sorted(set(gallery_index.class_names) | set(probe_index.class_names))
    if not set(gallery_index.class_names) & set(probe_index.class_names):
        raise ValueError(
            f"no identity of the probe folder {probe} is in the gallery {gallery}: gallery and probe "
            "sub-folders of one identity must have the same name"
        )
    label = {name: k for k, name in enumerate(identities)}
    distractor_images: list[Path] = []
    if distractors is not None:
        if not Path(distractors).is_dir():
            raise FileNotFoundError(f"distractor folder not found: {distractors}")
        distractor_images = list_image_files(distractors)
        if not distractor_images:
            raise ValueError(f"no images in the distractor folder {distractors}")
    return SearchSet(
        identities=identities,
        gallery_images=gallery_index.paths,
        gallery_labels=np.array([label[gallery_index.class_names[k]] for k in gallery_index.labels], dtype=np.int64),
        probe_images=probe_index.paths,
        probe_labels=np.array([label[probe_index.class_names[k]] for k in probe_index.labels], dtype=np.int64),
        distractor_images=distractor_images,
    )
