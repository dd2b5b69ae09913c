"""Stop, or skip the step, when the training loss is NaN or infinite."""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from facerec.distributed import all_reduce
from facerec.heads.head import describe_head

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def first_nonfinite(previous: Tensor | None, loss: Tensor) -> Tensor:
    """First non-finite loss seen so far, else the latest ``loss`` (scalars; no host sync)."""
    return loss if previous is None else torch.where(torch.isfinite(previous), loss, previous)


class NonFiniteLossGuard(Callback):
    """Checks all micro-batches' losses before each optimizer step, so non-finite gradients never reach weights.

    Under DDP the decision is all-reduced (all ranks act together). Cost per step: one scalar all-reduce
    and one device → host copy (a GPU sync).

    Args:
        skip: ``False``: raise :class:`NonFiniteLossError` (naming step, head, usual causes). ``True``:
            drop the step's gradients, warn, count in ``train/nonfinite_skipped`` and continue.
    """

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip
        self.skipped = 0
        self._loss: Tensor | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        self._loss = first_nonfinite(self._loss, loss.detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._loss is None:
            return
        loss, self._loss = self._loss, None
        if not bool(all_reduce((~torch.isfinite(loss)).float(), torch.distributed.ReduceOp.MAX)):
            return
        value = loss.item()
        loss_is = "non-finite in another process" if math.isfinite(value) else value
        head = describe_head(pl_module.head)
        if not self.skip:
            raise NonFiniteLossError(
                f"training loss is {loss_is} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}) with head {head}. Usual causes: a learning rate too high "
                "(lower optimizer.lr or lengthen scheduler.warmup_epochs), fp16 overflow "
                "(use trainer.precision=bf16-mixed or 32-true), or a margin too large for the head "
                "(lower head.margin.margin). The checkpoints on disk are from before this step; "
                "callbacks.nonfinite.skip=true skips such batches instead"
            )
        optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        log.warning("skipped batch at step %d: loss is %s with head %s", trainer.global_step, loss_is, head)
        pl_module.log("train/nonfinite_skipped", float(self.skipped))
