"""Run config and id in checkpoints, so a resume can check it continues the same run."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

RUN_CONFIG_KEY = "facerec_run_config"
RUN_ID_KEY = "facerec_run_id"


class RunConfigRecord(Callback):
    """Stores the resolved ``config`` (plain values) and ``run_id`` (unless None) in every checkpoint."""

    def __init__(self, config: dict[str, Any], run_id: str | None = None) -> None:
        self.config = config
        self.run_id = run_id

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.config
        if self.run_id is not None:
            checkpoint[RUN_ID_KEY] = self.run_id
