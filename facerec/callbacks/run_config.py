"""Keep the run's config in its checkpoints, so a resume can check it continues the same run."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

RUN_CONFIG_KEY = "facerec_run_config"
RUN_ID_KEY = "facerec_run_id"


class RunConfigRecord(Callback):
    """Stores the run's resolved config (plain Python values) and its run id in every checkpoint it saves.

    Args:
        config: The resolved config, e.g. ``OmegaConf.to_container(cfg, resolve=True)``.
        run_id: The id of the run directory's run (:func:`facerec.run.directory.write_records`), if known.
    """

    def __init__(self, config: dict[str, Any], run_id: str | None = None) -> None:
        self.config = config
        self.run_id = run_id

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.config
        if self.run_id is not None:
            checkpoint[RUN_ID_KEY] = self.run_id
