"""Thin Lightning callback around :func:`facerec.eval.verification.evaluate`."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from facerec.data.verification import VerificationSet
from facerec.eval.verification import evaluate


class VerificationCallback(Callback):
    """Evaluates every verification set of the datamodule whenever validation runs.

    The module's ``validation_step`` returns ``{"embeddings": (B, E), "index": (B,)}`` per batch
    of each set's images. At the end of the validation epoch the embeddings are gathered from all
    processes, de-duplicated by image index (the distributed sampler pads), paired and scored, so
    the metrics equal a single-process run. Every process logs the same values, so checkpointing
    on ``val/<set>/accuracy`` works under DDP.

    Args:
        n_folds: Folds of the accuracy protocol.
    """

    def __init__(self, n_folds: int = 10) -> None:
        self.n_folds = n_folds
        self.results: dict[str, dict[str, float]] = {}
        self.best_accuracy: dict[str, float] = {}
        self.evaluated_at_step: int | None = None
        self._batches: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

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
        self.evaluated_at_step = trainer.global_step

    def score(self, val_set: VerificationSet, embeddings: torch.Tensor) -> dict[str, float]:
        """Metrics of one set from the (N, E) embeddings of its images, plus ``xnorm``."""
        pairs = torch.as_tensor(val_set.pairs)
        array = embeddings.double().numpy()
        metrics = evaluate(array[pairs[:, 0]], array[pairs[:, 1]], val_set.issame, self.n_folds)
        return metrics | {"xnorm": float(embeddings.norm(dim=1).mean())}

    def _gather(self, pl_module: L.LightningModule, loader_index: int, num_images: int) -> torch.Tensor:
        batches = self._batches.get(loader_index, [])
        index = torch.cat([i for i, _ in batches])
        embeddings = torch.cat([e for _, e in batches]).float()
        if pl_module.trainer.world_size > 1:
            index = pl_module.all_gather(index).reshape(-1)
            embeddings = pl_module.all_gather(embeddings).reshape(-1, embeddings.shape[-1])
        gathered = torch.zeros((num_images, embeddings.shape[-1]), device=embeddings.device)
        covered = torch.zeros(num_images, dtype=torch.bool, device=embeddings.device)
        gathered[index], covered[index] = embeddings, True
        if not covered.all():
            raise RuntimeError(
                f"verification embeddings missing for {int((~covered).sum())} of {num_images} images; "
                "do not limit validation batches (trainer.limit_val_batches) when verification sets are configured"
            )
        return gathered.cpu()
