"""Thin Lightning callback around :func:`facerec.eval.verification.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from facerec.data.verification import VerificationSet
from facerec.eval.plots import save_roc
from facerec.eval.verification import evaluate, pair_distances, roc_curve


def rows_by_index(index: torch.Tensor, rows: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Places gathered rows by their index, keeping the first row of an index that occurs twice.

    The distributed sampler pads the last processes with repeats of the first samples, so after an
    all-gather in rank order the first occurrence is the sample's own.

    Args:
        index: (N,) row index of each gathered row, in [0, num_rows), repeats allowed.
        rows: (N, E) gathered rows.
        num_rows: Rows of the result.

    Returns:
        ``(placed, covered)``: (num_rows, E) rows, zero where no row came, and the (num_rows,) mask of those that did.
    """
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((num_rows,), len(index), device=index.device)
    first = first.scatter_reduce(0, index.long(), positions, "amin")
    covered = first < len(index)
    placed = rows.new_zeros((num_rows, rows.shape[-1]))
    placed[covered] = rows[first[covered]]
    return placed, covered


class VerificationCallback(Callback):
    """Evaluates every verification set of the datamodule whenever validation runs.

    The module's ``validation_step`` returns ``{"embeddings": (B, E), "index": (B,)}`` per batch
    of each set's images. At the end of the validation epoch the embeddings are gathered from all
    processes, de-duplicated by image index (the distributed sampler pads), paired and scored, so
    the metrics equal a single-process run. Every process logs the same values, so checkpointing
    on ``val/<set>/accuracy`` works under DDP. Process zero also writes each set's ROC curve to
    ``<trainer.default_root_dir>/roc_<set>.png`` (overwritten at every evaluation) and logs it as the
    image ``val/<set>/roc`` to every :class:`~lightning.pytorch.loggers.WandbLogger` of the trainer.
    The best accuracy of every set is kept in checkpoints, so ``val/<set>/best_accuracy`` continues
    after a resume.

    Validation (hence verification) runs every ``trainer.check_val_every_n_epoch`` epochs.

    A set whose source declares its folds (a ``pairs.txt`` header ``folds n``, ``folds`` ≥ 2) is
    scored on those folds, so its folds are the file's; ``n_folds`` applies to the others
    (insightface ``.bin`` files, single-count headers).

    Args:
        n_folds: Folds of the accuracy protocol for sets that declare none.
        roc_plots: Write and log the ROC curves.
    """

    def __init__(self, n_folds: int = 10, roc_plots: bool = True) -> None:
        self.n_folds = n_folds
        self.roc_plots = roc_plots
        self.results: dict[str, dict[str, float]] = {}
        self.best_accuracy: dict[str, float] = {}
        self.evaluated_at_step: int | None = None
        self._batches: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._fold_notes: set[str] = set()

    def state_dict(self) -> dict[str, Any]:
        return {"best_accuracy": dict(self.best_accuracy)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_accuracy = dict(state_dict["best_accuracy"])

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = {}

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batches.setdefault(dataloader_idx, []).append((outputs["index"], outputs["embeddings"]))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for loader_index, val_set in enumerate(trainer.datamodule.val_sets):
            embeddings = self._gather(pl_module, loader_index, len(val_set.images))
            metrics = self.score(val_set, embeddings)
            self.results[val_set.name] = metrics
            self.best_accuracy[val_set.name] = max(self.best_accuracy.get(val_set.name, 0.0), metrics["accuracy"])
            for key, value in metrics.items():
                pl_module.log(f"val/{val_set.name}/{key}", value, add_dataloader_idx=False)
            pl_module.log(
                f"val/{val_set.name}/best_accuracy",
                self.best_accuracy[val_set.name],
                add_dataloader_idx=False,
            )
            if self.roc_plots and trainer.is_global_zero:
                self.log_roc(trainer, val_set, embeddings)
        self.evaluated_at_step = trainer.global_step

    def score(self, val_set: VerificationSet, embeddings: torch.Tensor) -> dict[str, float]:
        """Metrics of one set from the (N, E) embeddings of its images, plus ``xnorm``.

        ``xnorm`` is the mean L2 norm of the set's image embeddings before normalisation (flip-TTA
        sums included), each image counted once.

        Raises:
            ValueError: If the set has fewer pairs than folds (its own, else ``n_folds``).
        """
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
        first, second = self._pair_embeddings(val_set, embeddings)
        metrics = evaluate(first, second, val_set.issame, n_folds)
        return metrics | {"xnorm": float(embeddings.norm(dim=1).mean())}

    def folds_of(self, val_set: VerificationSet) -> int:
        """The folds ``val_set`` is scored on: its own (``val_set.folds``) if it declares them, else ``n_folds``."""
        if val_set.folds is None:
            return self.n_folds
        if val_set.folds != self.n_folds and val_set.name not in self._fold_notes:
            self._fold_notes.add(val_set.name)
            rank_zero_info(
                f"verification set {val_set.name!r}: scored on the {val_set.folds} folds its pairs file declares "
                f"(callbacks.verification.n_folds={self.n_folds} applies to sets without folds of their own)"
            )
        return val_set.folds

    def log_roc(self, trainer: L.Trainer, val_set: VerificationSet, embeddings: torch.Tensor) -> Path | None:
        """Writes the set's ROC PNG to the run dir and logs it to W&B loggers.

        Returns:
            The PNG written, or None when the set lacks same or different pairs (no ROC exists).
        """
        issame = np.asarray(val_set.issame, dtype=bool)
        if issame.all() or not issame.any():
            return None
        far, tar, _ = roc_curve(pair_distances(*self._pair_embeddings(val_set, embeddings)), issame)
        path = save_roc(
            Path(trainer.default_root_dir) / f"roc_{val_set.name}.png",
            {val_set.name: (far, tar)},
            title=f"{val_set.name} ROC (step {trainer.global_step})",
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"val/{val_set.name}/roc", images=[str(path)], step=trainer.global_step)
        return path

    @staticmethod
    def _pair_embeddings(val_set: VerificationSet, embeddings: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        array = embeddings.double().numpy()
        pairs = np.asarray(val_set.pairs)
        return array[pairs[:, 0]], array[pairs[:, 1]]

    def _gather(self, pl_module: L.LightningModule, loader_index: int, num_images: int) -> torch.Tensor:
        batches = self._batches.get(loader_index, [])
        index = torch.cat([i for i, _ in batches])
        embeddings = torch.cat([e for _, e in batches]).float()
        if pl_module.trainer.world_size > 1:
            index = pl_module.all_gather(index).reshape(-1)
            embeddings = pl_module.all_gather(embeddings).reshape(-1, embeddings.shape[-1])
        gathered, covered = rows_by_index(index, embeddings, num_images)
        if not covered.all():
            raise RuntimeError(
                f"verification embeddings missing for {int((~covered).sum())} of {num_images} images; "
                "do not limit validation batches (trainer.limit_val_batches) when verification sets are configured"
            )
        return gathered.cpu()
