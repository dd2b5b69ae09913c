"""Lightning callback running a :class:`facerec.eval.metric.VerificationMetric` per verification set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from facerec.data.verification.sets import VerificationSet
from facerec.eval.metric import VerificationMetric, VerificationResult, rows_by_index
from facerec.eval.plots import save_roc

__all__ = ["VerificationCallback", "rows_by_index"]


class VerificationCallback(Callback):
    """Evaluates every datamodule verification set at each validation (``check_val_every_n_epoch``).

    Collects ``validation_step``'s ``{"embeddings": (B, E), "index": (B,)}``; at epoch end gathers all
    processes' embeddings, de-duplicates by index (sampler padding) and scores, equal to a single-process
    run. Every process logs ``val/<set>/<metric>`` (float64) and ``val/<set>/best_accuracy`` (kept in
    checkpoints). Rank 0 writes ``<default_root_dir>/roc_<set>.png`` and logs it to W&B as ``val/<set>/roc``.
    Sets whose ``pairs.txt`` header declares ``folds n`` (n ≥ 2) use those folds; others use ``n_folds``.

    Args:
        n_folds: Folds of the accuracy protocol for sets that declare none.
        roc_plots: Write and log the ROC curves.

    Attributes:
        results: ``{set name: VerificationResult}`` of the last evaluation.
        evaluated_at_step: ``trainer.global_step`` of the last evaluation; None before the first.
    """

    def __init__(self, n_folds: int = 10, roc_plots: bool = True) -> None:
        self.n_folds = n_folds
        self.roc_plots = roc_plots
        self.results: dict[str, VerificationResult] = {}
        self.best_accuracy: dict[str, float] = {}
        self.evaluated_at_step: int | None = None
        self._metrics: list[VerificationMetric] = []
        self._fold_notes: set[str] = set()

    def state_dict(self) -> dict[str, Any]:
        return {"best_accuracy": dict(self.best_accuracy)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_accuracy = dict(state_dict["best_accuracy"])

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._metrics = [self.metric_for(val_set) for val_set in trainer.datamodule.val_sets]

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._metrics[dataloader_idx].update(outputs["embeddings"], outputs["index"])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for val_set, metric in zip(trainer.datamodule.val_sets, self._metrics, strict=True):
            result = metric.compute()
            self.results[val_set.name] = result
            accuracy = max(self.best_accuracy.get(val_set.name, 0.0), result.metrics["accuracy"])
            self.best_accuracy[val_set.name] = accuracy
            for key, value in (result.metrics | {"best_accuracy": accuracy}).items():
                pl_module.log(f"val/{val_set.name}/{key}", torch.tensor(value, dtype=torch.float64),
                              add_dataloader_idx=False)  # fmt: skip
            if self.roc_plots and trainer.is_global_zero:
                self.log_roc(trainer, val_set.name, result)
            metric.reset()
        self.evaluated_at_step = trainer.global_step

    def metric_for(self, val_set: VerificationSet) -> VerificationMetric:
        """New metric for ``val_set`` on :meth:`folds_of` folds; ValueError if it has fewer pairs than folds."""
        n_folds = self.folds_of(val_set)
        if len(val_set) < n_folds:
            folds = (
                f"the {n_folds} folds of its pairs file's header"
                if val_set.folds is not None
                else f"callbacks.verification.n_folds={self.n_folds}"
            )
            raise ValueError(
                f"verification set {val_set.name!r} has {len(val_set)} pairs, fewer than {folds}: "
                "every fold needs at least one pair; use a larger set or fewer folds"
            )
        return VerificationMetric(val_set.pairs, val_set.issame, len(val_set.images), n_folds)

    def folds_of(self, val_set: VerificationSet) -> int:
        """``val_set.folds`` if declared (logged once if ≠ ``n_folds``), else ``n_folds``."""
        if val_set.folds is None:
            return self.n_folds
        if val_set.folds != self.n_folds and val_set.name not in self._fold_notes:
            self._fold_notes.add(val_set.name)
            rank_zero_info(
                f"verification set {val_set.name!r}: scored on the {val_set.folds} folds its pairs file declares "
                f"(callbacks.verification.n_folds={self.n_folds} applies to sets without folds of their own)"
            )
        return val_set.folds

    def log_roc(self, trainer: L.Trainer, name: str, result: VerificationResult) -> Path | None:
        """Writes ``roc_<name>.png`` to the run dir and logs it to W&B; returns its path, None if no ROC."""
        if result.roc is None:
            return None
        path = save_roc(
            Path(trainer.default_root_dir) / f"roc_{name}.png",
            {name: (result.roc.fpr, result.roc.tpr)},
            title=f"{name} ROC (step {trainer.global_step})",
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"val/{name}/roc", images=[str(path)], step=trainer.global_step)
        return path
