"""A 1:N search set from identity folders: gallery, probes, optional distractors; overlapping folders are refused."""

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
    """Gallery, probe and distractor folders that overlap; the message names them."""


@dataclass
class SearchSet:
    """Images of a 1:N search; label ``k`` is ``identities[k]`` (same-named gallery/probe folders are one identity).

    ``identities``: sorted gallery and probe names; ``gallery_labels``/``probe_labels``: int64 per image
    (probes may be unenrolled); ``distractor_images``: extra gallery images of nobody searched for (MegaFace-style).
    """

    identities: list[str]
    gallery_images: list[Path]
    gallery_labels: np.ndarray
    probe_images: list[Path]
    probe_labels: np.ndarray
    distractor_images: list[Path]


def load_search_set(gallery: str | Path, probe: str | Path, distractors: str | Path | None = None) -> SearchSet:
    """Scans gallery and probe identity folders (one sub-folder per identity) and an optional distractor folder.

    Args:
        gallery: Enrolled images.
        probe: Probe images; identities not in the gallery are non-mated probes.
        distractors: Images at any depth (sub-folders ignored), or None.

    Raises:
        FileNotFoundError: A folder does not exist.
        SearchSetError: Two folders are one or nested (links resolved), or one file is in two (links followed).
        ValueError: A folder holds no image, or no probe identity is in the gallery.
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
    """Refuses two folders that are one (links resolved) or nested."""
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
    """Refuses a file (device, inode) in two of the sets."""
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
    """Warns if distractor sub-folders are named as gallery identities (they still count as nobody)."""
    named = sorted({path.relative_to(root).parts[0] for path in images if len(path.relative_to(root).parts) > 1})
    clashes = [name for name in named if name in identities]
    if clashes:
        log.warning(
            "distractor folder %s has sub-folders named as gallery identities (%s): distractors count as nobody "
            "searched for; if they show these people, move them to the gallery",
            root, ", ".join(clashes[:5]),
        )  # fmt: skip
