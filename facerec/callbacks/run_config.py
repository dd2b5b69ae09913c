"""Keep the run's config in its checkpoints, so a resume can check it continues the same run."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from facerec.resume import RUN_CONFIG_KEY


class RunConfigRecord(Callback):
    """Stores the run's resolved config (plain Python values) in every checkpoint it saves.

    Args:
        config: The resolved config, e.g. ``OmegaConf.to_container(cfg, resolve=True)``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.config
