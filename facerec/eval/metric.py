"""One verification set's metrics as a ``torchmetrics.Metric``: embeddings in, the 10-fold protocol and ROC out.

Every process updates the metric with the embeddings and image indices of its batches; ``compute`` gathers both
across processes (``dist_reduce_fx="cat"``, in rank order), keeps one embedding per image and scores the set's
pairs once, returning the metrics and the ROC curve they summarise, so a 2-process run scores like one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from facerec.eval.verification import FAR_TARGETS, RocCurve, evaluate_with_roc

METRIC_KEYS = ("accuracy", "accuracy_std", "best_threshold", "auc", "eer", *FAR_TARGETS, "xnorm")
"""The keys of :attr:`VerificationResult.metrics`, in order."""


@dataclass
class VerificationResult:
    """One evaluation of a verification set.

    Attributes:
        metrics: ``{key: value}`` for every key of :data:`METRIC_KEYS` (ROC metrics NaN when one class is absent).
        roc: The ROC curve of the pair distances that ``auc``, ``eer`` and ``tar@far=…`` summarise; None when the
            set lacks same or different pairs.
    """

    metrics: dict[str, float]
    roc: RocCurve | None


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


class VerificationMetric(Metric):
    """Verification metrics of one set of image pairs, from the embeddings of its images.

    ``xnorm`` is the mean L2 norm of the set's image embeddings before normalisation (flip-TTA sums
    included), each image counted once; the other metrics are :func:`facerec.eval.verification.evaluate`'s
    on the pairs, from float64 copies of the float32 embeddings.

    Args:
        pairs: (P, 2) image indices of each pair.
        issame: (P,) whether each pair shows one identity.
        num_images: Images of the set; every index in ``[0, num_images)`` must be updated at least once.
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
        """Adds the (B, E) embeddings of the images with (B,) indices ``indices`` (repeats allowed)."""
        if embeddings.ndim != 2 or indices.shape != embeddings.shape[:1]:
            raise ValueError(f"expected (B, E) embeddings and (B,) indices, got {tuple(embeddings.shape)} and "
                             f"{tuple(indices.shape)}")  # fmt: skip
        self.embeddings.append(embeddings.detach().float())
        self.indices.append(indices.detach().long())

    def compute(self) -> VerificationResult:
        """Scores the pairs on every process's embeddings, the first one of each image kept.

        Raises:
            RuntimeError: If an image of the set got no embedding.
        """
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
