"""Identification (1:N search) metrics against hand-worked examples, and chunked search against a brute-force
loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerec.eval.search import (
    DISTRACTOR_LABEL,
    cmc_curve,
    dir_at_fpir,
    fpir_key,
    identification_metrics,
    identity_templates,
    search,
)


def unit(x: float, y_sign: float) -> list[float]:
    """The 2-D unit vector ``(x, y_sign * sqrt(1 - x²))``: its cosine with (1, 0) is x."""
    return [x, y_sign * math.sqrt(1.0 - x * x)]


def test_identity_templates_average_normalised_embeddings():
    # identity 7: (2, 0) and (0, 3) normalise to (1, 0) and (0, 1); mean (.5, .5) → (1/√2, 1/√2).
    # identity 3: (0, -5) → (0, -1). Identities come back sorted: [3, 7].
    templates, identities = identity_templates(np.array([[2.0, 0.0], [0.0, -5.0], [0.0, 3.0]]), np.array([7, 3, 7]))
    np.testing.assert_array_equal(identities, [3, 7])
    np.testing.assert_allclose(templates, [[0.0, -1.0], [math.sqrt(0.5), math.sqrt(0.5)]], atol=1e-15)


# Gallery of the CMC example: the score of a probe (1, 0) is an entry's x, of a probe (0, 1) its y.
#   label:      10       11          12           13          14       15
CMC_GALLERY = [[1, 0], [0.6, 0.8], [0.6, -0.8], [0.8, 0.6], [0, 1], [-1, 0]]
CMC_LABELS = [10, 11, 12, 13, 14, 15]


def cmc_example(k: int = 5):
    # probe (1, 0) scores  10: 1, 13: .8, 11: .6, 12: .6 (tie), 14: 0, 15: -1
    # probe (0, 1) scores  14: 1, 11: .8, 13: .6, 10: 0, 15: 0, 12: -.8
    # rank = 1 + #(other entries scoring >= the true one):
    #   (1, 0) as 10 → 1;  as 11 → 1 + |{10, 13, 12}| = 4 (tie with 12 counts: 3 if ties were optimistic);
    #   as 14 → 5;  as 15 → 6;  (0, 1) as 11 → 1 + |{14}| = 2;  as 13 → 1 + |{14, 11}| = 3;  (1, 0) as 99 → not mated
    probes = torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [1, 0]])
    return search(probes, torch.tensor(CMC_GALLERY), CMC_LABELS, [10, 11, 14, 15, 11, 13, 99], k=k)


def test_cmc_hand_example_with_tie_and_third_rank():
    result = cmc_example()
    np.testing.assert_array_equal(result.ranks, [1, 4, 5, 6, 2, 3, 0])
    np.testing.assert_array_equal(result.mated, [True] * 6 + [False])
    assert (result.n_mated, result.n_non_mated) == (6, 1)
    np.testing.assert_allclose(result.mated_scores[:6], [1.0, 0.6, 0.0, -1.0, 0.8, 0.6], atol=1e-7)
    assert math.isnan(result.mated_scores[6])
    # top-5 of a probe (1, 0): 10, 13, then 11 and 12 in either order (exact tie), then 14
    assert result.topk_scores.dtype == np.float32 and result.topk_scores.shape == (7, 5)
    np.testing.assert_allclose(result.topk_scores[0], [1.0, 0.8, 0.6, 0.6, 0.0], atol=1e-7)
    assert list(result.topk_labels[0, :2]) == [10, 13] and set(result.topk_labels[0, 2:4]) == {11, 12}
    assert result.topk_labels[0, 4] == 14 and not result.topk_distractor.any()
    # mated ranks 1, 4, 5, 6, 2, 3: at rank r exactly r of the 6 probes are identified
    np.testing.assert_allclose(cmc_curve(result), np.arange(1, 7) / 6)
    np.testing.assert_allclose(cmc_curve(result, max_rank=8), [1, 2, 3, 4, 5, 6, 6, 6] / np.float64(6))
    metrics = identification_metrics(result, fpir_targets=())
    assert metrics == pytest.approx({"rank-1": 1 / 6, "rank-5": 5 / 6})


def test_top_k_is_capped_at_the_gallery_size():
    result = cmc_example(k=10)
    assert result.topk_scores.shape == (7, 6)
    np.testing.assert_array_equal(result.ranks, [1, 4, 5, 6, 2, 3, 0])


def dir_example():
    # gallery: identity 1 = (1, 0), identity 2 = (0, 1). A probe (x, -√(1-x²)), x >= 0, scores x against 1 and
    # -√(1-x²) <= x against 2, so its top-1 score is x.
    # 10 non-mated probes (identities 100…109) with top-1 scores .9 .7 .6 .5 .5 .4 .3 .2 .1 0.
    # mated probes (identity, top-1 score, rank):
    #   A 1, .95, 1;  B 1, .8, 1;  C 1, .7, 1 (the same vector as the non-mated .7);  E 1, .6, 1;
    #   D 2, (.99, +.141): scores .99 against 1 and .141 against its own 2 → rank 2, never identified.
    non_mated = [0.9, 0.7, 0.6, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    probes = [unit(x, -1) for x in non_mated] + [unit(x, -1) for x in (0.95, 0.8, 0.7, 0.6)] + [unit(0.99, 1)]
    labels = [*range(100, 110), 1, 1, 1, 1, 2]
    return search(torch.tensor(probes, dtype=torch.float64), torch.eye(2, dtype=torch.float64), [1, 2], labels)


def test_dir_at_fpir_hand_example():
    result = dir_example()
    np.testing.assert_array_equal(result.ranks[10:], [1, 1, 1, 1, 2])
    # FPIR 1e-2: floor(.01 * 10) = 0 false positives → threshold above s_1 = .9 (score > .9): only A (.95).
    assert dir_at_fpir(result, 1e-2) == pytest.approx((0.9, 1 / 5, 0.0))
    # FPIR .1: 1 false positive → accept score > s_2 = .7: non-mated .9 only (FPIR .1), mated A, B. C scores
    # exactly .7: accepting it would accept the non-mated .7 too (FPIR .2 > .1), so it is rejected.
    assert dir_at_fpir(result, 1e-1) == pytest.approx((0.7, 2 / 5, 0.1))
    # FPIR .4: 4 allowed, but s_4 = s_5 = .5 tie → score > .5: non-mated .9 .7 .6 (FPIR .3 < .4), mated A B C E.
    assert dir_at_fpir(result, 0.4) == pytest.approx((0.5, 4 / 5, 0.3))
    # FPIR 1: every non-mated probe may pass (threshold -inf); D still misses (rank 2).
    assert dir_at_fpir(result, 1.0) == pytest.approx((-math.inf, 4 / 5, 1.0))
    assert identification_metrics(result) == pytest.approx(
        {"rank-1": 4 / 5, "rank-5": 1.0, "dir@fpir=1e-2": 1 / 5, "dir@fpir=1e-1": 2 / 5}
    )


def test_fpir_keys():
    assert [fpir_key(x) for x in (1e-2, 1e-1, 2.5e-2, 1e-6)] == [
        "dir@fpir=1e-2",
        "dir@fpir=1e-1",
        "dir@fpir=2.5e-2",
        "dir@fpir=1e-6",
    ]


def test_nan_without_mated_or_non_mated_probes():
    gallery = torch.eye(2)
    only_mated = search(torch.tensor([[1.0, 0], [0.6, 0.8]]), gallery, [1, 2], [1, 2])
    metrics = identification_metrics(only_mated)
    assert metrics["rank-1"] == 1.0 and metrics["rank-5"] == 1.0
    assert math.isnan(metrics["dir@fpir=1e-2"]) and math.isnan(metrics["dir@fpir=1e-1"])
    assert all(math.isnan(value) for value in dir_at_fpir(only_mated, 0.1))

    only_non_mated = search(torch.tensor([[1.0, 0], [0.6, 0.8]]), gallery, [1, 2], [3, 4])
    assert all(math.isnan(value) for value in identification_metrics(only_non_mated).values())
    assert np.isnan(cmc_curve(only_non_mated)).all()
    point = dir_at_fpir(only_non_mated, 0.5)  # 1 of 2 may pass: threshold s_2 = .8 (the (.6, .8) probe's top-1)
    assert point.threshold == pytest.approx(0.8) and point.fpir == 0.5 and math.isnan(point.dir)


def test_distractor_that_outscores_the_true_identity_costs_a_rank():
    # probe (.8, .6) as identity 1 = (1, 0): score .8; identity 2 = (0, 1): .6 → rank 1.
    probe, gallery = torch.tensor([[0.8, 0.6]]), torch.eye(2)
    assert search(probe, gallery, [1, 2], [1]).ranks.tolist() == [1]
    # distractor (0, -1) scores -.6: still rank 1. Distractor (.6, .8) scores .48 + .48 = .96 > .8: rank 2.
    low, high = torch.tensor([[0.0, -1.0]]), torch.tensor([[0.6, 0.8]])
    assert search(probe, gallery, [1, 2], [1], distractors=low).ranks.tolist() == [1]
    result = search(probe, gallery, [1, 2], [1], distractors=torch.cat([low, high]))
    assert result.ranks.tolist() == [2] and (result.n_gallery, result.n_distractors) == (2, 2)
    # entries: 0 = identity 1, 1 = identity 2, 2 = distractor low, 3 = distractor high
    assert result.topk_indices.tolist() == [[3, 0, 1, 2]]
    assert result.topk_labels.tolist() == [[DISTRACTOR_LABEL, 1, 2, DISTRACTOR_LABEL]]
    assert result.topk_distractor.tolist() == [[True, False, False, True]]
    np.testing.assert_allclose(result.topk_scores, [[0.96, 0.8, 0.6, -0.6]], atol=1e-6)
    assert identification_metrics(result, fpir_targets=())["rank-1"] == 0.0
    # a distractor equal to the template ties it exactly: pessimistic rank 2
    assert search(probe, gallery, [1, 2], [1], distractors=torch.tensor([[1.0, 0.0]])).ranks.tolist() == [2]


def brute_force(probes, gallery, gallery_labels, probe_labels, distractors, k):
    """Per probe: the full similarity row, sorted; the true entry's score and pessimistic rank."""

    def normalise(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    entries = normalise(np.concatenate([gallery, distractors]).astype(np.float64))
    scores, indices, mated_scores, ranks = [], [], [], []
    for probe, label in zip(normalise(probes.astype(np.float64)), probe_labels, strict=True):
        row = entries @ probe
        order = np.argsort(-row, kind="stable")[:k]
        scores.append(row[order])
        indices.append(order)
        where = np.flatnonzero(np.asarray(gallery_labels) == label)
        if len(where) == 0:
            mated_scores.append(np.nan)
            ranks.append(0)
            continue
        true = row[where[0]]
        others = np.delete(row, where[0])
        mated_scores.append(true)
        ranks.append(1 + int(np.sum(others >= true)))
    return np.array(scores), np.array(indices), np.array(mated_scores), np.array(ranks)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_search_equals_brute_force(dtype):
    rng = np.random.default_rng(0)
    embedding_size = 16
    identities = rng.choice(np.arange(-1000, 1000), size=200, replace=False)  # arbitrary ints, negatives too
    images = rng.normal(size=(400, embedding_size))
    image_labels = np.repeat(identities, 2)
    templates, gallery_labels = identity_templates(images, image_labels)
    shuffle = rng.permutation(200)
    templates, gallery_labels = templates[shuffle], gallery_labels[shuffle]
    distractors = rng.normal(size=(100, embedding_size))
    # 35 mated probes: a template plus noise (cosine ~.6, so ranks vary); 15 non-mated of unknown identities
    mated_labels = rng.choice(gallery_labels, size=35)
    lookup = {label: row for row, label in enumerate(gallery_labels)}
    mated_probes = np.stack([templates[lookup[label]] for label in mated_labels])
    probes = np.concatenate([mated_probes + 0.3 * rng.normal(size=(35, embedding_size)), rng.normal(size=(15, 16))])
    probe_labels = np.concatenate([mated_labels, np.arange(5000, 5015)])

    def tensor(x):
        return torch.tensor(x, dtype=dtype)

    result = search(
        tensor(probes),
        tensor(templates),
        torch.tensor(gallery_labels),
        probe_labels,
        distractors=tensor(distractors),
        k=5,
        probe_chunk=7,
        gallery_chunk=13,
    )
    scores, indices, mated_scores, ranks = brute_force(
        probes, templates, gallery_labels, probe_labels, distractors, k=5
    )
    assert result.topk_scores.dtype == (np.float32 if dtype == torch.float32 else np.float64)
    np.testing.assert_array_equal(result.ranks, ranks)
    np.testing.assert_array_equal(result.topk_indices, indices)
    np.testing.assert_allclose(result.topk_scores, scores, atol=1e-6)
    np.testing.assert_allclose(result.mated_scores, mated_scores, atol=1e-6)
    np.testing.assert_array_equal(result.mated, np.arange(50) < 35)
    labels_of_entries = np.concatenate([gallery_labels, np.full(100, DISTRACTOR_LABEL)])
    np.testing.assert_array_equal(result.topk_labels, labels_of_entries[indices])
    np.testing.assert_array_equal(result.topk_distractor, indices >= 200)
    # the example exercises what it should: hits, misses, distractors in the top-k
    assert (ranks[:35] == 1).sum() >= 5 and (ranks[:35] > 5).sum() >= 5 and (indices >= 200).any()


E2 = torch.eye(2)
VALIDATION_CASES = {
    "probes not 2-D": (dict(probes=torch.ones(2)), "probes must be"),
    "embedding widths": (dict(probes=torch.ones(1, 3)), "embedding widths differ"),
    "distractor width": (dict(distractors=torch.ones(4, 3)), "embedding widths differ"),
    "empty gallery": (dict(gallery=torch.ones(0, 2), gallery_labels=[]), "empty gallery"),
    "duplicated identity": (dict(gallery_labels=[5, 5]), r"duplicated gallery identities.*\[5\]"),
    "gallery labels": (dict(gallery_labels=[1, 2, 3]), "mismatched gallery"),
    "probe labels": (dict(probe_labels=[1, 2]), "mismatched probes"),
    "float labels": (dict(probe_labels=[1.5]), "probe_labels must be integers"),
    "labels not 1-D": (dict(gallery_labels=[[1, 2]]), "gallery_labels must be 1-D"),
    "integer embeddings": (dict(gallery=torch.eye(2, dtype=torch.long)), "gallery must be floating point"),
    "non-finite probe": (dict(probes=torch.tensor([[math.nan, 0.0]])), "non-finite probe"),
    "non-finite gallery": (dict(distractors=torch.tensor([[math.inf, 0.0]])), "non-finite gallery"),
    "k": (dict(k=0), "k must be >= 1"),
    "probe chunk": (dict(probe_chunk=0), "probe_chunk must be >= 1"),
    "gallery chunk": (dict(gallery_chunk=0), "gallery_chunk must be >= 1"),
}


@pytest.mark.parametrize("case", VALIDATION_CASES)
def test_search_validation(case):
    overrides, message = VALIDATION_CASES[case]
    arguments = dict(probes=torch.ones(1, 2), gallery=E2, gallery_labels=[1, 2], probe_labels=[1]) | overrides
    with pytest.raises(ValueError, match=message):
        search(**arguments)


def test_metric_and_template_validation():
    result = cmc_example()
    with pytest.raises(ValueError, match="FPIR target"):
        dir_at_fpir(result, 1.5)
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        identification_metrics(result, ranks=(0, 1))
    with pytest.raises(ValueError, match="max_rank"):
        cmc_curve(result, max_rank=0)
    with pytest.raises(ValueError, match="mismatched inputs"):
        identity_templates(np.ones((3, 2)), np.array([1, 2]))
    with pytest.raises(ValueError, match="no embeddings"):
        identity_templates(np.ones((0, 2)), np.array([], dtype=int))
