"""Plot of the learned features at the end of training (as Figures 2–3 of the center-loss paper)."""

from __future__ import annotations

import logging
from functools import partial

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from facerec.viz import embed_identity_folder, plot_panels

log = logging.getLogger(__name__)


class FeaturePlot(Callback):
    """At fit end (rank 0), plots training and held-out features, one colour per identity.

    2-d embeddings are drawn raw (Wen et al., ECCV 2016); larger ones L2-normalised and PCA-projected.
    Held-out panels: each verification set given as an image folder (``data.val_sets.<name>.images``).

    Args:
        path: The PNG to write.
        max_identities: Identities per panel.
    """

    def __init__(self, path: str, max_identities: int = 10) -> None:
        self.path = path
        self.max_identities = max_identities

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = trainer.datamodule
        embed = partial(
            embed_identity_folder,
            pl_module.net,
            image_size=data.image_size,
            max_identities=self.max_identities,
            crop=data.crop,
        )
        panels = [("training", *embed(data.root, format=data.format))]
        for name, options in data.val_set_paths.items():
            if "images" in options:
                panels.append((f"held-out ({name})", *embed(options["images"], format="folder")))
        head = type(pl_module.head).__name__
        path = plot_panels(panels, self.path, f"{head}: {pl_module.hparams.embedding_size}-d features")
        log.info("feature plot written to %s", path)
