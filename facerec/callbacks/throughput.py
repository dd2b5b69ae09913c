"""Training throughput in images per second."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class ImagesPerSecond(Callback):
    """Logs ``train/images_per_second`` (all processes together), averaged since the epoch started.

    Host-side wall-clock time only: no device synchronisation is added.

    Not Lightning's ``ThroughputMonitor``: it logs to the loggers only (not the progress bar), waits
    ``window_size`` (100) batches before its first rate, names the all-process rate only when
    ``world_size > 1`` (``train/device/samples_per_sec`` otherwise) and syncs the GPU after every batch.
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
