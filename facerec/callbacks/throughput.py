"""Training throughput in images per second."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class ImagesPerSecond(Callback):
    """Logs ``train/images_per_second`` (all processes) per step, averaged since the epoch start; no device sync.

    Unlike Lightning's ``ThroughputMonitor``: in the progress bar, rates from batch 1, one name at any world size.
    """

    def __init__(self) -> None:
        self._start = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._images = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[0]) * trainer.world_size
        elapsed = time.perf_counter() - self._start
        if elapsed > 0:
            pl_module.log("train/images_per_second", self._images / elapsed, prog_bar=True, on_step=True)
