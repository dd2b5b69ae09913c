"""1:N search over identity folders (``conf/eval_set/search.yaml``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from facerec.data.protocols import search as search_files
from facerec.data.verification.sets import VerificationImages
from facerec.eval.search import FPIR_TARGETS, RANKS, fpir_key, identification_metrics, search_identities
from facerec.eval.verification import l2_normalize
from facerec.eval_sets.base import EvalSet
from facerec.inference import FaceEmbedder, embed_dataset

log = logging.getLogger(__name__)


class SearchSet(EvalSet):
    """1:N search (:mod:`facerec.eval.search`): identity templates of the gallery (+ distractors), every probe searched.

    Args:
        name: The set's name.
        gallery: Identity folder (one sub-folder per person) of the enrolled images.
        probe: Identity folder of the images searched for; people not in the gallery are non-mated probes.
        distractors: Folder of images of people never searched for (at any depth), or None.
        batch_size: Images per embedding batch; None: the data config's.
        num_workers: Loader processes; None: the data config's.
    """

    config_name = "search"
    title = "1:N search"
    columns = (*(f"rank-{rank}" for rank in RANKS), *(fpir_key(target) for target in FPIR_TARGETS))
    folder_options = ("gallery", "probe", "distractors")

    def __init__(
        self,
        name: str,
        gallery: str,
        probe: str,
        distractors: str | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(name, batch_size, num_workers)
        self.gallery = gallery
        self.probe = probe
        self.distractors = distractors
        self.images: search_files.SearchSet | None = None

    def load(self) -> None:
        """Scans the folders and refuses any overlap (:func:`facerec.data.protocols.search.load_search_set`)."""
        self.images = search_files.load_search_set(self.gallery, self.probe, self.distractors)

    def run(self, embedder: FaceEmbedder, output_dir: Path, batch_size: int, num_workers: int) -> dict[str, float]:
        """Searches every probe; writes no file.

        Returns:
            ``rank-1``, ``rank-5``, ``dir@fpir=1e-2``, ``dir@fpir=1e-1``
            (:func:`facerec.eval.search.identification_metrics`).
        """
        if self.images is None:
            self.load()
        data = self.images
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
