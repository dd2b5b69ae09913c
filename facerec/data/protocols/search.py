"""A 1:N search set from identity folders: a gallery, probes searched against it, optional distractors.

The folders are untrusted: a gallery that is also the probe folder (or holds it, or shares an image with it)
would search images for themselves; :func:`load_search_set` refuses any overlap before anything is embedded.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.data.training.folder import list_image_files, scan_identity_folder
from facerec.errors import DataFileError

log = logging.getLogger(__name__)


class SearchSetError(DataFileError):
    """Gallery, probe and distractor folders that cannot make a 1:N search; the message names the folders."""


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
        SearchSetError: If two of the folders are one folder or one is inside another (symbolic links
            resolved), or one image file (symbolic or hard links followed) is in two of them.
        ValueError: If a folder holds no image, or no probe identity is enrolled in the gallery.
    """
    folders = {"gallery": Path(gallery), "probe": Path(probe)}
    if distractors is not None:
        folders["distractor"] = Path(distractors)
    _check_separate_folders(folders)
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
        _warn_named_distractors(Path(distractors), distractor_images, set(gallery_index.class_names))
    _check_separate_files(
        {"gallery": gallery_index.paths, "probe": probe_index.paths, "distractor": distractor_images}, folders
    )
    return SearchSet(
        identities=identities,
        gallery_images=gallery_index.paths,
        gallery_labels=np.array([label[gallery_index.class_names[k]] for k in gallery_index.labels], dtype=np.int64),
        probe_images=probe_index.paths,
        probe_labels=np.array([label[probe_index.class_names[k]] for k in probe_index.labels], dtype=np.int64),
        distractor_images=distractor_images,
    )


def _check_separate_folders(folders: dict[str, Path]) -> None:
    """Refuses two folders that are one (symbolic links resolved) or nested."""
    resolved = {role: folder.resolve() for role, folder in folders.items()}
    for first, second in itertools.combinations(folders, 2):
        a, b = resolved[first], resolved[second]
        if a == b:
            relation = "are one folder"
        elif a.is_relative_to(b) or b.is_relative_to(a):
            relation = "are nested (one holds the other)"
        else:
            continue
        raise SearchSetError(
            f"the {first} folder {folders[first]} and the {second} folder {folders[second]} {relation} ({a}, {b}): "
            "a 1:N search needs separate gallery, probe and distractor folders, or it searches images for themselves"
        )


def _check_separate_files(images: dict[str, list[Path]], folders: dict[str, Path]) -> None:
    """Refuses an image file that is in two of the sets (one file by device and inode: links followed)."""
    owner: dict[tuple[int, int], tuple[str, Path]] = {}
    for role, paths in images.items():
        for path in paths:
            status = path.stat()
            identity = (status.st_dev, status.st_ino)
            if identity in owner and owner[identity][0] != role:
                other_role, other = owner[identity]
                raise SearchSetError(
                    f"{path} (in the {role} folder {folders[role]}) and {other} (in the {other_role} folder "
                    f"{folders[other_role]}) are one file (a link): gallery, probe and distractor images must differ"
                )
            owner.setdefault(identity, (role, path))


def _warn_named_distractors(root: Path, images: list[Path], identities: set[str]) -> None:
    """Warns when distractors lie in folders named as gallery identities (they still count as nobody)."""
    named = sorted({path.relative_to(root).parts[0] for path in images if len(path.relative_to(root).parts) > 1})
    clashes = [name for name in named if name in identities]
    if clashes:
        log.warning(
            "distractor folder %s has sub-folders named as gallery identities (%s): distractors count as nobody "
            "searched for; if they show these people, move them to the gallery",
            root, ", ".join(clashes[:5]),
        )  # fmt: skip
