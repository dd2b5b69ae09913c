"""Best verification accuracies in the W&B run summary."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger


class WandbBestSummary(Callback):
    """At fit end, copies every ``*/best_accuracy`` metric into the W&B run summary (no-op without W&B)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = {key: float(value) for key, value in trainer.callback_metrics.items() if key.endswith("/best_accuracy")}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and best:
                logger.experiment.summary.update(best)
