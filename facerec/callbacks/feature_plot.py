"""A picture of the learned features at the end of training (Figures 2–3 of the center-loss paper)."""

from __future__ import annotations

import logging
from functools import partial

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from facerec.viz import embed_identity_folder, plot_panels

log = logging.getLogger(__name__)


class FeaturePlot(Callback):
    """At the end of training, plots the features of training and held-out images, one colour per identity.

    With ``model.embedding_size=2`` the raw features are drawn (as in Wen et al., ECCV 2016);
    larger embeddings are L2-normalised and projected with PCA (:func:`facerec.viz.feature_figure`).
    Held-out images come from every verification set given as an image folder
    (``data.val_sets.<name>.images``).

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
