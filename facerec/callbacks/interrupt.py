"""Resumable checkpoint on interrupt (Ctrl+C, SIGTERM), and the matching exit status."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, OnExceptionCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class InterruptCheckpoint(Callback):
    """Writes ``<dirpath>/last.ckpt`` (resume: ``ckpt_path=last``) on SIGINT or SIGTERM only.

    Other exceptions save nothing, so ``last.ckpt`` stays the last good one. Wraps
    :class:`~lightning.pytorch.callbacks.OnExceptionCheckpoint` rather than subclassing it: that one saves
    on any exception, deletes its file in ``teardown`` and would join ``trainer.checkpoint_callbacks``.

    Args:
        dirpath: The run's checkpoint folder.
    """

    def __init__(self, dirpath: str) -> None:
        self.on_interrupt = OnExceptionCheckpoint(dirpath, filename="last")

    @property
    def path(self) -> Path:
        """``<dirpath>/last.ckpt``."""
        return Path(self.on_interrupt.ckpt_path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self.on_interrupt.on_exception(trainer, pl_module, exception)
            log.warning("interrupted at step %d: checkpoint saved to %s", trainer.global_step, self.path)


def interrupt_exit_status(stop: SystemExit, trainer: L.Trainer) -> int | str | None:
    """Exit status for a fit Lightning ended with ``SystemExit``: 143 (SIGTERM), 130 (SIGINT), else its code.

    Lightning itself exits 0 after SIGTERM (read as success by schedulers) and 1 after Ctrl+C.
    """
    if isinstance(stop, SIGTERMException):
        return 128 + signal.SIGTERM
    if trainer.interrupted and stop.code == 1:
        return 128 + signal.SIGINT
    return stop.code
