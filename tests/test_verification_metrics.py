"""Verification metrics against hand-worked examples and a slow reference of the protocol; the Metric that
wraps them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerec.eval.metric import METRIC_KEYS, VerificationMetric
from facerec.eval.verification import (
    THRESHOLDS,
    area_under_curve,
    contiguous_folds,
    evaluate,
    pair_distances,
    roc_curve,
)


def pairs_at_distances(distances: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """2-D unit vectors whose squared L2 distance is each of ``distances`` (d = 2 - 2 cos φ)."""
    cosines = 1.0 - np.asarray(distances) / 2.0
    first = np.tile([[1.0, 0.0]], (len(distances), 1))
    second = np.stack([cosines, np.sqrt(1.0 - cosines**2)], axis=1)
    return first, second


def slow_kfold_accuracy(distances, issame, n_folds):
    """The published protocol written as plainly as possible."""
    n = len(distances)
    fold_sizes = [n // n_folds + (1 if k < n % n_folds else 0) for k in range(n_folds)]
    start, accuracies, thresholds = 0, [], []
    for size in fold_sizes:
        test = list(range(start, start + size))
        train = [i for i in range(n) if i not in test]
        start += size
        best_threshold, best_accuracy = None, -1.0
        for threshold in THRESHOLDS:
            correct = sum((distances[i] < threshold) == issame[i] for i in train)
            if correct / len(train) > best_accuracy:
                best_threshold, best_accuracy = threshold, correct / len(train)
        thresholds.append(best_threshold)
        accuracies.append(sum((distances[i] < best_threshold) == issame[i] for i in test) / len(test))
    mean = sum(accuracies) / n_folds
    return mean, math.sqrt(sum((a - mean) ** 2 for a in accuracies) / n_folds), sum(thresholds) / n_folds


def test_distances_are_squared_l2_of_normalised_embeddings():
    first, second = pairs_at_distances([0.5, 1.0, 3.0])
    np.testing.assert_allclose(pair_distances(first * 7, second * 0.1), [0.5, 1.0, 3.0], atol=1e-12)


def test_hand_worked_two_folds():
    # fold 0 = pairs 0,1 (same); trained on pairs 2,3 (different, d=1.5, 3.0) -> first best t = 0.0
    # -> both same pairs predicted "different": 0/2. fold 1 trained on d=0.5, 1.0 (same) -> first
    # best t = 1.01 -> d=1.5, 3.0 predicted "different": 2/2. Mean 0.5, std 0.5, threshold 0.505.
    first, second = pairs_at_distances([0.5, 1.0, 1.5, 3.0])
    metrics = evaluate(first, second, [True, True, False, False], n_folds=2)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["accuracy_std"] == pytest.approx(0.5)
    assert metrics["best_threshold"] == pytest.approx(0.505)
    assert metrics["auc"] == pytest.approx(1.0)
    assert metrics["eer"] == pytest.approx(0.0)
    assert metrics["tar@far=1e-3"] == pytest.approx(1.0)


def test_hand_worked_roc_metrics():
    # same d = 0.2, 0.8; different d = 0.5, 1.2. Same closer than different in 3 of 4 (same,
    # different) combinations -> AUC 0.75. FAR = FRR = 0.5 for thresholds in (0.5, 0.8) -> EER 0.5.
    # At FAR 0 the best TAR is 0.5 (threshold 0.2).
    first, second = pairs_at_distances([0.2, 0.5, 0.8, 1.2])
    metrics = evaluate(first, second, [True, False, True, False], n_folds=2)
    assert metrics["auc"] == pytest.approx(0.75)
    assert metrics["eer"] == pytest.approx(0.5)
    assert metrics["tar@far=1e-3"] == pytest.approx(0.5)
    assert metrics["tar@far=1e-4"] == pytest.approx(0.5)


def test_ties_count_one_half_in_auc():
    first, second = pairs_at_distances([1.0, 1.0])
    assert evaluate(first, second, [True, False], n_folds=2)["auc"] == pytest.approx(0.5)


def test_matches_slow_reference_on_random_pairs():
    rng = np.random.default_rng(0)
    issame = rng.random(203) < 0.5
    first = rng.normal(size=(203, 8))
    second = first + rng.normal(size=(203, 8)) * np.where(issame, 0.6, 3.0)[:, None]
    metrics = evaluate(first, second, issame, n_folds=10)
    accuracy, std, threshold = slow_kfold_accuracy(pair_distances(first, second), issame, 10)
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert metrics["accuracy_std"] == pytest.approx(std, abs=1e-12)
    assert metrics["best_threshold"] == pytest.approx(threshold, abs=1e-12)


def test_folds_are_contiguous_blocks_like_unshuffled_kfold():
    sizes = [len(fold) for fold in contiguous_folds(23, 10)]
    assert sizes == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert np.array_equal(np.concatenate(contiguous_folds(23, 10)), np.arange(23))


def test_all_same_pairs_follow_the_protocol_and_roc_is_undefined():
    # fold 0 trains on d=0.305, 0.405 -> t=0.41, both test pairs right; fold 1 trains on
    # d=0.105, 0.205 -> t=0.21, both test pairs (d=0.305, 0.405) wrong. Mean 0.5, threshold 0.31.
    first, second = pairs_at_distances([0.105, 0.205, 0.305, 0.405])
    metrics = evaluate(first, second, [True] * 4, n_folds=2)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["best_threshold"] == pytest.approx(0.31)
    assert math.isnan(metrics["auc"]) and math.isnan(metrics["eer"])


def test_all_different_pairs():
    first, second = pairs_at_distances([0.1, 0.2, 0.3, 0.4])
    metrics = evaluate(first, second, [False] * 4, n_folds=2)
    assert metrics["accuracy"] == 1.0
    assert metrics["best_threshold"] == 0.0


def test_fewer_pairs_than_folds_is_a_clear_error():
    first, second = pairs_at_distances([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 pairs cannot be split into 10 folds"):
        evaluate(first, second, [True, False, True], n_folds=10)


def test_mismatched_lengths_are_a_clear_error():
    first, second = pairs_at_distances([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="mismatched inputs"):
        evaluate(first, second[:2], [True, False, True], n_folds=2)


def random_set(pairs: int = 60, images: int = 50, dim: int = 8, seed: int = 0):
    """Random image embeddings (float32, as validation returns them) and pairs of them."""
    rng = np.random.default_rng(seed)
    embeddings = torch.from_numpy(rng.normal(size=(images, dim)).astype(np.float32))
    index = rng.integers(0, images, size=(pairs, 2))
    return embeddings, index, rng.random(pairs) < 0.5


def test_metric_equals_the_pure_functions():
    embeddings, pairs, issame = random_set()
    metric = VerificationMetric(pairs, issame, len(embeddings), n_folds=10)
    order = torch.randperm(len(embeddings), generator=torch.Generator().manual_seed(1))
    for batch in order.split(16):  # batches arrive in any order: images are placed by index
        metric.update(embeddings[batch], batch)
    result = metric.compute()
    array = embeddings.double().numpy()
    expected = evaluate(array[pairs[:, 0]], array[pairs[:, 1]], issame, n_folds=10)
    assert list(result.metrics) == list(METRIC_KEYS)
    assert result.metrics == expected | {"xnorm": float(embeddings.norm(dim=1).mean())}
    fpr, tpr, thresholds = roc_curve(pair_distances(array[pairs[:, 0]], array[pairs[:, 1]]), issame)
    assert np.array_equal(result.roc.fpr, fpr) and np.array_equal(result.roc.tpr, tpr)
    assert np.array_equal(result.roc.thresholds, thresholds)
    assert result.metrics["auc"] == area_under_curve(result.roc.fpr, result.roc.tpr)


def test_repeated_images_keep_their_first_embedding():
    """As the distributed sampler's padding: repeats of an image, here with other values, change nothing."""
    embeddings, pairs, issame = random_set()
    once = VerificationMetric(pairs, issame, len(embeddings), n_folds=10)
    once.update(embeddings, torch.arange(len(embeddings)))
    twice = VerificationMetric(pairs, issame, len(embeddings), n_folds=10)
    twice.update(embeddings[:30], torch.arange(30))
    twice.update(embeddings[30:], torch.arange(30, len(embeddings)))
    twice.update(embeddings[:5] + 1.0, torch.arange(5))
    twice.update(embeddings[:2] * 3.0, torch.arange(2))
    expected, result = once.compute(), twice.compute()
    assert result.metrics == expected.metrics
    assert all(np.array_equal(a, b) for a, b in zip(result.roc, expected.roc, strict=True))


def test_metric_resets_and_names_missing_images():
    embeddings, pairs, issame = random_set()
    metric = VerificationMetric(pairs, issame, len(embeddings), n_folds=10)
    metric.update(embeddings, torch.arange(len(embeddings)))
    first = metric.compute()
    metric.reset()
    metric.update(embeddings[:-3], torch.arange(len(embeddings) - 3))
    with pytest.raises(RuntimeError, match="missing for 3 of 50 images"):
        metric.compute()
    metric.reset()
    metric.update(embeddings, torch.arange(len(embeddings)))
    assert metric.compute().metrics == first.metrics


def test_one_class_sets_have_no_roc_curve():
    embeddings, pairs, _ = random_set()
    metric = VerificationMetric(pairs, np.ones(len(pairs), bool), len(embeddings), n_folds=10)
    metric.update(embeddings, torch.arange(len(embeddings)))
    result = metric.compute()
    assert result.roc is None and math.isnan(result.metrics["auc"])
