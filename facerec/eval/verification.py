"""Face verification metrics (NumPy): LFW k-fold accuracy as insightface's ``verification.py``, plus ROC summaries.

See :func:`evaluate_with_roc` for the protocol."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

THRESHOLDS = np.arange(0, 4, 0.01)
FAR_TARGETS = {"tar@far=1e-3": 1e-3, "tar@far=1e-4": 1e-4}
MIN_FALSE_ACCEPTS = 10
"""Minimum false accepts behind a FAR estimate: FAR x needs ``ceil(10 / x)`` impostor pairs."""


def needed_impostors(far: float) -> int:
    """Impostor (different-identity) pairs needed for FAR ``far``: ``ceil(10 / far)``."""
    return math.ceil(MIN_FALSE_ACCEPTS / far - 1e-9)


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """(N, E) → (N, E) float64 rows over their L2 norm; zero rows stay zero."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.where(norms > 0, norms, 1.0)


def pair_distances(embeddings1: np.ndarray, embeddings2: np.ndarray) -> np.ndarray:
    """Squared L2 distance (P,) between the normalised rows of two (P, E) arrays."""
    difference = l2_normalize(embeddings1) - l2_normalize(embeddings2)
    return np.sum(difference * difference, axis=1)


def contiguous_folds(n: int, n_folds: int) -> list[np.ndarray]:
    """Test indices per fold: contiguous blocks, the first ``n % n_folds`` one longer.

    Raises:
        ValueError: ``n_folds < 2`` or ``n < n_folds``.
    """
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    if n < n_folds:
        raise ValueError(f"{n} pairs cannot be split into {n_folds} folds: need at least one pair per fold")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[k], bounds[k + 1]) for k in range(n_folds)]


def threshold_accuracies(distances: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Accuracy (T,) of predicting "same" iff ``distance < t``, per threshold t."""
    predicted = distances[None, :] < thresholds[:, None]
    return np.mean(predicted == issame[None, :], axis=1)


def kfold_accuracy(
    distances: np.ndarray, issame: np.ndarray, n_folds: int = 10, thresholds: np.ndarray = THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold test accuracies (n_folds,) and thresholds (n_folds,) chosen on the other folds."""
    accuracies, chosen = np.zeros(n_folds), np.zeros(n_folds)
    for k, test in enumerate(contiguous_folds(len(distances), n_folds)):
        train = np.setdiff1d(np.arange(len(distances)), test)
        best = int(np.argmax(threshold_accuracies(distances[train], issame[train], thresholds)))
        chosen[k] = thresholds[best]
        accuracies[k] = threshold_accuracies(distances[test], issame[test], thresholds[best : best + 1])[0]
    return accuracies, chosen


class RocCurve(NamedTuple):
    """ROC points: false accept rate ``fpr``, true accept rate ``tpr``, distance ``thresholds``."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


# Not torchmetrics' binary_roc/binary_auroc: they compute rates in float32 (3e-8 off on the tests' cases) and
# sigmoid-map scores outside [0, 1] (here -distance).
def roc_curve(distances: np.ndarray, issame: np.ndarray) -> RocCurve:
    """ROC of ``distance <= t`` over the K distinct distances: (K + 1,) arrays from (0, 0), threshold -inf.

    Raises:
        ValueError: Same or different pairs are missing.
    """
    positives, negatives = int(issame.sum()), int((~issame).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("a ROC curve needs both same and different pairs")
    order = np.argsort(distances, kind="stable")
    sorted_distances, sorted_same = distances[order], issame[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(sorted_distances)), len(sorted_distances) - 1]
    true_accepts = np.cumsum(sorted_same)[last_of_value]
    false_accepts = (last_of_value + 1) - true_accepts
    far = np.r_[0.0, false_accepts / negatives]
    tar = np.r_[0.0, true_accepts / positives]
    return RocCurve(far, tar, np.r_[-np.inf, sorted_distances[last_of_value]])


def area_under_curve(far: np.ndarray, tar: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve (ties count one half, as the Mann–Whitney statistic)."""
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def equal_error_rate(far: np.ndarray, tar: np.ndarray) -> float:
    """Rate where FAR equals FRR (1 − TAR), linearly interpolated on the ROC."""
    frr = 1.0 - tar
    crossing = int(np.argmax(far >= frr))
    if crossing == 0:
        return float(far[0])
    gap_before = frr[crossing - 1] - far[crossing - 1]
    gap_after = far[crossing] - frr[crossing]
    weight = gap_before / (gap_before + gap_after)
    return float(far[crossing - 1] + weight * (far[crossing] - far[crossing - 1]))


def tar_at_far(far: np.ndarray, tar: np.ndarray, target: float) -> float:
    """Highest TAR among ROC points with FAR ≤ ``target``."""
    return float(tar[far <= target].max())


def threshold_at_far(roc: RocCurve, target: float) -> float:
    """Distance threshold of :func:`tar_at_far`'s point; ValueError if none accepts a pair at FAR ≤ ``target``."""
    best = int(np.flatnonzero(roc.fpr <= target)[-1])
    if best == 0:
        raise ValueError(f"no distance threshold accepts any pair at a false accept rate <= {target:g}")
    return float(roc.thresholds[best])


def evaluate(
    embeddings1: np.ndarray, embeddings2: np.ndarray, issame: np.ndarray, n_folds: int = 10
) -> dict[str, float]:
    """:func:`evaluate_with_roc`'s metrics, without the ROC."""
    return evaluate_with_roc(embeddings1, embeddings2, issame, n_folds)[0]


def evaluate_with_roc(
    embeddings1: np.ndarray, embeddings2: np.ndarray, issame: np.ndarray, n_folds: int = 10
) -> tuple[dict[str, float], RocCurve | None]:
    """Verification metrics of pairs ``(embeddings1[k], embeddings2[k])`` and their ROC curve.

    Accuracy as insightface's ``verification.py``: L2-normalised embeddings, squared L2 distance, contiguous
    folds (scikit-learn ``KFold(shuffle=False)``), per fold the first threshold in ``0, 0.01, …, 3.99``
    maximising training-fold accuracy, "same" iff ``distance < threshold``; mean and population std.

    Args:
        embeddings1: (P, E) first image of each pair (flip-TTA already summed if used).
        embeddings2: (P, E) second image of each pair.
        issame: (P,) bool, whether the pair shows one identity.
        n_folds: Folds of the accuracy protocol.

    Returns:
        ``(metrics, roc)``: ``accuracy``, ``accuracy_std``, ``best_threshold`` (fold mean), ``auc``, ``eer``,
        ``tar@far=1e-3``, ``tar@far=1e-4``; :func:`roc_curve` of the distances. If a class is absent, ROC
        metrics are NaN and ``roc`` is None.

    Raises:
        ValueError: On mismatched shapes or fewer pairs than folds.
    """
    issame = np.asarray(issame, dtype=bool)
    if len(embeddings1) != len(embeddings2) or len(embeddings1) != len(issame):
        raise ValueError(
            f"mismatched inputs: {len(embeddings1)} and {len(embeddings2)} embeddings, {len(issame)} labels"
        )
    distances = pair_distances(embeddings1, embeddings2)
    accuracies, thresholds = kfold_accuracy(distances, issame, n_folds)
    metrics = {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "best_threshold": float(np.mean(thresholds)),
    }
    if issame.all() or not issame.any():
        return metrics | {"auc": float("nan"), "eer": float("nan")} | dict.fromkeys(FAR_TARGETS, float("nan")), None
    roc = roc_curve(distances, issame)
    metrics |= {"auc": area_under_curve(roc.fpr, roc.tpr), "eer": equal_error_rate(roc.fpr, roc.tpr)}
    return metrics | {key: tar_at_far(roc.fpr, roc.tpr, target) for key, target in FAR_TARGETS.items()}, roc
