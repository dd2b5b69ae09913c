"""IJB-B / IJB-C 1:1 template verification in the official layout (``conf/eval_set/ijb.yaml``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from facerec.data.protocols import ijb as ijb_files
from facerec.data.transforms import eval_transform
from facerec.eval.ijb import FAR_TARGETS_IJB, far_key, ijb_verification
from facerec.eval.plots import save_roc
from facerec.eval_sets.base import EvalSet
from facerec.inference import FaceEmbedder, embed_dataset

log = logging.getLogger(__name__)

IJB_PREFIXES = ("ijbb", "ijbc")


class IJBSet(EvalSet):
    """IJB-B / IJB-C 1:1 template verification, scored as insightface's ``eval_ijbc.py`` (:mod:`facerec.eval.ijb`).

    Images are aligned by their landmarks to the model's input size and embedded (with the mirror image when
    ``flip_test``); image features are pooled into templates and every template pair is scored. N1 and D1 are on
    by default, as insightface's, so that results compare with published tables.

    Args:
        name: The set's name; writes ``roc_<name>.png`` (and ``<name>_features.npy``).
        root: The folder holding ``meta/`` and ``loose_crop/``.
        prefix: ``ijbb`` or ``ijbc``; None: the set's name when it is one, else the one protocol in ``meta/``.
        use_norm_score: N1: keep each image feature's norm (else L2-normalise it).
        use_detector_score: D1: weight each image feature by its detector score.
        save_features: Also write ``<output dir>/<name>_features.npy``: the raw per-image features, one row per
            line of the image list.
        batch_size: Images per embedding batch; None: the data config's.
        num_workers: Loader processes; None: the data config's.
    """

    config_name = "ijb"
    title = "IJB 1:1 template verification (TAR at FAR)"
    columns = tuple(far_key(target) for target in FAR_TARGETS_IJB)
    folder_options = ("root",)

    def __init__(
        self,
        name: str,
        root: str,
        prefix: str | None = None,
        use_norm_score: bool = True,
        use_detector_score: bool = True,
        save_features: bool = False,
        batch_size: int | None = None,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(name, batch_size, num_workers)
        self.root = root
        self.prefix = prefix
        self.use_norm_score = use_norm_score
        self.use_detector_score = use_detector_score
        self.save_features = save_features
        self.protocol: ijb_files.IJBSet | None = None

    def load(self) -> None:
        """Reads the meta files and landmarks (:func:`facerec.data.protocols.ijb.load_ijb`)."""
        prefix = self.prefix or (self.name if self.name in IJB_PREFIXES else None)
        self.protocol = ijb_files.load_ijb(self.root, prefix)

    def run(self, embedder: FaceEmbedder, output_dir: Path, batch_size: int, num_workers: int) -> dict[str, float]:
        """Verifies every template pair; writes ``roc_<name>.png`` (and the features if asked).

        Returns:
            ``tar@far=1e-6`` … ``tar@far=1e-1`` (and the other metrics of :func:`facerec.eval.ijb.ijb_verification`).
        """
        if self.protocol is None:
            self.load()
        protocol = self.protocol
        if embedder.crop is not None:
            log.warning(
                "%s: images are aligned to the ArcFace template at %s; the model's training crop %s is not applied",
                self.name, embedder.input_size, embedder.crop,
            )  # fmt: skip
        dataset = ijb_files.AlignedImages(
            protocol.images, protocol.landmarks, embedder.input_size, eval_transform(embedder.input_size)
        )
        what = f"embedding {self.name} ({len(dataset)} images)"
        features = embed_dataset(embedder, dataset, batch_size, num_workers, what)
        if self.save_features:
            path = output_dir / f"{self.name}_features.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, features)
            log.info("%s: raw per-image features written to %s", self.name, path)
        metrics, roc = ijb_verification(
            features,
            protocol.scores,
            protocol.templates,
            protocol.medias,
            protocol.template1,
            protocol.template2,
            protocol.labels,
            use_norm_score=self.use_norm_score,
            use_detector_score=self.use_detector_score,
        )
        title = f"{self.name} 1:1 template verification"
        save_roc(output_dir / f"roc_{self.name}.png", {self.name: (roc.fpr, roc.tpr)}, title=title)
        return metrics
