"""``eval.py``'s ``eval_sets``: IJB-B/C template verification and 1:N search, run with an embedder.

Each entry of ``eval_sets`` is one protocol, told apart by its keys:

- ``root`` (IJB-B / IJB-C in the official layout, :mod:`facerec.data.protocols.ijb`): images aligned by their
  landmarks to the model's input size, embedded (with the mirror image when ``flip_test``), pooled into
  templates and scored pair by pair as insightface's ``eval_ijbc.py`` (:mod:`facerec.eval.ijb`). Options:
  ``prefix`` (``ijbb``/``ijbc``, default the set's name when it is one, else the one protocol found),
  ``use_norm_score`` (N1), ``use_detector_score`` (D1) (both on by default, as insightface), ``save_features`` (write
  ``<run dir>/<name>_features.npy``: the raw per-image features, one row per line of the image list).
- ``gallery`` and ``probe`` (1:N search over identity folders, :mod:`facerec.eval.search`), optionally
  ``distractors``.

Both take ``batch_size`` and ``num_workers`` (default the data config's ``eval_batch_size`` and
``num_workers``). Every set's files are read and checked by :func:`check_eval_sets`, before any image is embedded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from facerec.data.protocols.ijb import AlignedImages, load_ijb
from facerec.data.protocols.search import load_search_set
from facerec.data.transforms import eval_transform
from facerec.data.verification.sets import VerificationImages
from facerec.eval.ijb import FAR_TARGETS_IJB, far_key, ijb_verification
from facerec.eval.plots import save_roc
from facerec.eval.search import FPIR_TARGETS, RANKS, fpir_key, identification_metrics, search_identities
from facerec.eval.verification import l2_normalize
from facerec.inference import FaceEmbedder, embed_dataset
from facerec.run.tables import ResultTable

log = logging.getLogger(__name__)

COMMON_OPTIONS = {"batch_size", "num_workers"}
FOLDER_OPTIONS = {"root", "gallery", "probe", "distractors"}
IJB_OPTIONS = {"root", "prefix", "use_norm_score", "use_detector_score", "save_features"} | COMMON_OPTIONS
SEARCH_OPTIONS = {"gallery", "probe", "distractors"} | COMMON_OPTIONS
IJB_COLUMNS = tuple(far_key(target) for target in FAR_TARGETS_IJB)
SEARCH_COLUMNS = (*(f"rank-{rank}" for rank in RANKS), *(fpir_key(target) for target in FPIR_TARGETS))
IJB_DEFAULTS = {"prefix": None, "use_norm_score": True, "use_detector_score": True, "save_features": False}
"""insightface's ``eval_ijbc.py`` settings (N1 and D1 on), so that results compare with published tables."""


def check_eval_sets(eval_sets: DictConfig | Mapping | None) -> dict[str, dict[str, Any]]:
    """``eval_sets`` as plain dicts, each with its ``kind`` and its files read, checked before any embedding.

    An IJB set gets its ``protocol`` (:func:`facerec.data.protocols.ijb.load_ijb`), a search set its ``search_set``
    (:func:`facerec.data.protocols.search.load_search_set`), so that a bad file of any set fails before any is embedded.

    Raises:
        ValueError: For unknown options, naming the set, its keys and the options of its kind; for a malformed
            IJB file or overlapping search folders (see the loaders).
        FileNotFoundError: For a folder option that is not a folder, naming it.
    """
    eval_sets = OmegaConf.to_container(eval_sets, resolve=True) if OmegaConf.is_config(eval_sets) else eval_sets
    checked = {}
    for name, options in (eval_sets or {}).items():
        options = dict(options or {})
        if "root" in options and options.keys() <= IJB_OPTIONS:
            checked[name] = {"kind": "ijb", **IJB_DEFAULTS, **options}
        elif {"gallery", "probe"} <= options.keys() <= SEARCH_OPTIONS:
            checked[name] = {"kind": "search", "distractors": None, **options}
        else:
            raise ValueError(
                f"eval_sets.{name} has keys {sorted(options)}: give 'root' for IJB-B/C (options "
                f"{', '.join(sorted(IJB_OPTIONS - {'root'}))}), or 'gallery' and 'probe' for 1:N search (options "
                f"{', '.join(sorted(SEARCH_OPTIONS - {'gallery', 'probe'}))})"
            )
        for key in FOLDER_OPTIONS & options.keys():
            if options[key] is not None and not Path(options[key]).is_dir():
                raise FileNotFoundError(f"eval_sets.{name}.{key}: folder not found: {options[key]}")
    for name, options in checked.items():
        if options["kind"] == "ijb":
            prefix = options["prefix"] or (name if name in ("ijbb", "ijbc") else None)
            options["protocol"] = load_ijb(options["root"], prefix)
        else:
            options["search_set"] = load_search_set(options["gallery"], options["probe"], options["distractors"])
    return checked


def run_eval_sets(
    eval_sets: Mapping[str, Mapping[str, Any]],
    embedder: FaceEmbedder,
    output_dir: Path,
    batch_size: int = 64,
    num_workers: int = 0,
) -> list[ResultTable]:
    """Runs every checked (:func:`check_eval_sets`) set; returns one table of IJB and one of search results."""
    ijb, searches = {}, {}
    for name, options in eval_sets.items():
        loading = {
            "batch_size": options.get("batch_size", batch_size),
            "num_workers": options.get("num_workers", num_workers),
        }
        if options["kind"] == "ijb":
            ijb[name] = evaluate_ijb(name, options, embedder, output_dir, **loading)
        else:
            searches[name] = evaluate_search(options, embedder, **loading)
    return [
        ResultTable("IJB 1:1 template verification (TAR at FAR)", ijb, IJB_COLUMNS),
        ResultTable("1:N search", searches, SEARCH_COLUMNS),
    ]


def evaluate_ijb(
    name: str, options: Mapping[str, Any], embedder: FaceEmbedder, output_dir: Path, batch_size: int, num_workers: int
) -> dict[str, float]:
    """IJB-B/C 1:1 template verification of one set; writes ``roc_<name>.png`` (and the features if asked).

    Returns:
        ``tar@far=1e-6`` … ``tar@far=1e-1`` (and the other metrics of :func:`facerec.eval.ijb.ijb_verification`).
    """
    protocol = options["protocol"]
    if embedder.crop is not None:
        log.warning(
            "%s: images are aligned to the ArcFace template at %s; the model's training crop %s is not applied",
            name, embedder.input_size, embedder.crop,
        )  # fmt: skip
    dataset = AlignedImages(
        protocol.images, protocol.landmarks, embedder.input_size, eval_transform(embedder.input_size)
    )
    features = embed_dataset(embedder, dataset, batch_size, num_workers, f"embedding {name} ({len(dataset)} images)")
    if options["save_features"]:
        path = output_dir / f"{name}_features.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, features)
        log.info("%s: raw per-image features written to %s", name, path)
    metrics, roc = ijb_verification(
        features,
        protocol.scores,
        protocol.templates,
        protocol.medias,
        protocol.template1,
        protocol.template2,
        protocol.labels,
        use_norm_score=options["use_norm_score"],
        use_detector_score=options["use_detector_score"],
    )
    save_roc(output_dir / f"roc_{name}.png", {name: (roc.fpr, roc.tpr)}, title=f"{name} 1:1 template verification")
    return metrics


def evaluate_search(
    options: Mapping[str, Any], embedder: FaceEmbedder, batch_size: int, num_workers: int
) -> dict[str, float]:
    """1:N search of one set: identity templates of the gallery (+ distractors), every probe searched.

    Returns:
        ``rank-1``, ``rank-5``, ``dir@fpir=1e-2``, ``dir@fpir=1e-1``
        (:func:`facerec.eval.search.identification_metrics`).
    """
    data = options["search_set"]
    transform = embedder.transform

    def embed(images: list[Path], what: str) -> np.ndarray:
        dataset = VerificationImages(images, transform)
        return l2_normalize(embed_dataset(embedder, dataset, batch_size, num_workers, f"embedding {what}"))

    distractors = embed(data.distractor_images, "distractors") if data.distractor_images else None
    result = search_identities(
        embed(data.gallery_images, "gallery"),
        data.gallery_labels,
        embed(data.probe_images, "probes"),
        data.probe_labels,
        distractors,
        device=embedder.device,
        dtype=torch.float32,
    )
    log.info(
        "1:N search: %d gallery identities, %d distractors, %d mated and %d non-mated probes",
        result.n_gallery, result.n_distractors, result.n_mated, result.n_non_mated,
    )  # fmt: skip
    return identification_metrics(result)
