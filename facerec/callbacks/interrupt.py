"""Save a resumable checkpoint when a run is interrupted (Ctrl+C, SIGTERM from a scheduler)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, OnExceptionCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class InterruptCheckpoint(Callback):
    """Writes ``<dirpath>/last.ckpt`` when training stops on SIGINT (Ctrl+C) or SIGTERM.

    Lightning turns SIGTERM into a :class:`SIGTERMException` after the current batch; both it and
    ``KeyboardInterrupt`` reach :meth:`on_exception`. Other exceptions (a bug, a non-finite loss)
    save nothing, so ``last.ckpt`` stays the last good checkpoint. ``ckpt_path=last`` resumes it.

    Lightning's :class:`~lightning.pytorch.callbacks.OnExceptionCheckpoint` writes the file; it is
    wrapped, not subclassed, because on its own it saves on every exception and deletes its file in
    ``teardown`` (after every successful fit, that would be the ``last.ckpt`` the ``last_checkpoint``
    callback writes), and as a ``Checkpoint`` it would join ``trainer.checkpoint_callbacks``.

    Args:
        dirpath: The run's checkpoint folder.
    """

    def __init__(self, dirpath: str) -> None:
        self.on_interrupt = OnExceptionCheckpoint(dirpath, filename="last")

    @property
    def path(self) -> Path:
        """The checkpoint written on an interrupt: ``<dirpath>/last.ckpt``."""
        return Path(self.on_interrupt.ckpt_path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self.on_interrupt.on_exception(trainer, pl_module, exception)
            log.warning("interrupted at step %d: checkpoint saved to %s", trainer.global_step, self.path)


def interrupt_exit_status(stop: SystemExit, trainer: L.Trainer) -> int | str | None:
    """The exit status of a fit that Lightning ended with ``SystemExit``: 128 + the signal's number.

    Lightning exits with status 0 after SIGTERM and 1 after Ctrl+C; a scheduler would read the first as
    success. An interrupted run exits 143 (SIGTERM) or 130 (SIGINT) instead; any other ``SystemExit``
    keeps its status.
    """
    if isinstance(stop, SIGTERMException):
        return 128 + signal.SIGTERM
    if trainer.interrupted and stop.code == 1:
        return 128 + signal.SIGINT
    return stop.code
