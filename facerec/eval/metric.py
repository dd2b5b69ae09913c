"""A verification set's metrics as a ``torchmetrics.Metric``: embeddings in, k-fold metrics and ROC out.

Multi-process results equal single-process ones (gathered in rank order, one embedding per image)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from facerec.eval.verification import FAR_TARGETS, RocCurve, evaluate_with_roc

METRIC_KEYS = ("accuracy", "accuracy_std", "best_threshold", "auc", "eer", *FAR_TARGETS, "xnorm")
"""Keys of :attr:`VerificationResult.metrics`, in order."""


@dataclass
class VerificationResult:
    """``metrics``: every :data:`METRIC_KEYS` key (ROC ones NaN if a class is absent); ``roc``: None then."""

    metrics: dict[str, float]
    roc: RocCurve | None


def rows_by_index(index: torch.Tensor, rows: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatters ``rows`` (N, E) to positions ``index`` (N,), first occurrence winning (sampler padding repeats).

    Returns:
        ``placed`` (num_rows, E), zero where no row came; ``covered`` (num_rows,) bool mask.
    """
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((num_rows,), len(index), device=index.device)
    first = first.scatter_reduce(0, index.long(), positions, "amin")
    covered = first < len(index)
    placed = rows.new_zeros((num_rows, rows.shape[-1]))
    placed[covered] = rows[first[covered]]
    return placed, covered


class VerificationMetric(Metric):
    """Verification metrics of one pair set from its images' embeddings (:func:`~facerec.eval.verification.evaluate`).

    Computed in float64; ``xnorm`` is the mean unnormalised embedding norm, each image once.

    Args:
        pairs: (P, 2) image indices of each pair.
        issame: (P,) whether each pair shows one identity.
        num_images: Images of the set; each index in ``[0, num_images)`` must be updated.
        n_folds: Folds of the accuracy protocol.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, pairs: np.ndarray, issame: np.ndarray, num_images: int, n_folds: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.issame = np.asarray(issame, dtype=bool)
        self.num_images = num_images
        self.n_folds = n_folds
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, indices: torch.Tensor) -> None:
        """Adds embeddings (B, E) of images ``indices`` (B,), repeats allowed; ValueError on other shapes."""
        if embeddings.ndim != 2 or indices.shape != embeddings.shape[:1]:
            raise ValueError(f"expected (B, E) embeddings and (B,) indices, got {tuple(embeddings.shape)} and "
                             f"{tuple(indices.shape)}")  # fmt: skip
        self.embeddings.append(embeddings.detach().float())
        self.indices.append(indices.detach().long())

    def compute(self) -> VerificationResult:
        """Scores the pairs on all processes' embeddings; RuntimeError if an image has none."""
        if isinstance(self.indices, list) and not self.indices:
            indices, embeddings = torch.zeros(0, dtype=torch.long), torch.zeros(0, 1)
        else:
            indices, embeddings = dim_zero_cat(self.indices).long(), dim_zero_cat(self.embeddings)
        placed, covered = rows_by_index(indices, embeddings.reshape(len(indices), -1), self.num_images)
        if not covered.all():
            raise RuntimeError(
                f"verification embeddings missing for {int((~covered).sum())} of {self.num_images} images; "
                "do not limit validation batches (trainer.limit_val_batches) when verification sets are configured"
            )
        placed = placed.cpu()
        array = placed.double().numpy()
        metrics, roc = evaluate_with_roc(array[self.pairs[:, 0]], array[self.pairs[:, 1]], self.issame, self.n_folds)
        return VerificationResult(metrics | {"xnorm": float(placed.norm(dim=1).mean())}, roc)
