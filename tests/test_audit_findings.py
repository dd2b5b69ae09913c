"""The audit's pure parts on hand-made embeddings with hand-worked answers: the chunked cosine search, duplicates,
label errors, identity merges and overlap (``facerec.data.audit``)."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.data.audit.findings import (
    LabelError,
    Merge,
    NearDuplicate,
    Overlap,
    exact_duplicates,
    identity_centres,
    identity_merges,
    label_errors,
    near_duplicates,
    overlap,
)
from facerec.data.audit.neighbours import top_k_cosine


def unit(*rows: list[float]) -> np.ndarray:
    """(N, E) float32 L2-normalised rows."""
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def angle(degrees: float) -> list[float]:
    """A 2-d unit vector at ``degrees``."""
    return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]


@pytest.mark.parametrize(("query_chunk", "key_chunk"), [(1, 1), (2, 3), (1024, 65536)])
def test_chunked_search_equals_the_full_matrix(query_chunk, key_chunk):
    rng = np.random.default_rng(0)
    queries, keys = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(11, 5)).astype(np.float32)
    indices, scores = top_k_cosine(queries, keys, 3, query_chunk=query_chunk, key_chunk=key_chunk)
    full = queries @ keys.T
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :3], rtol=1e-5)


def test_search_can_skip_each_row_itself_and_gives_fewer_columns_than_k_when_keys_run_out():
    points = unit(angle(0), angle(10), angle(90))
    indices, scores = top_k_cosine(points, points, 5, skip_self=True, key_chunk=2)
    assert indices.tolist() == [[1, 2], [0, 2], [1, 0]]
    np.testing.assert_allclose(scores[:, 0], [np.cos(np.radians(10))] * 2 + [np.cos(np.radians(80))], rtol=1e-5)
    assert top_k_cosine(points[:1], points[:1], 3, skip_self=True)[0].shape == (1, 0)


def test_search_refuses_mismatched_shapes_and_bad_sizes():
    with pytest.raises(ValueError, match="one width"):
        top_k_cosine(np.zeros((2, 3)), np.zeros((2, 4)), 1)
    with pytest.raises(ValueError, match=">= 1"):
        top_k_cosine(np.zeros((2, 3)), np.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match="skip_self"):
        top_k_cosine(np.zeros((2, 3)), np.zeros((3, 3)), 1, skip_self=True)


def test_exact_duplicates_group_equal_digests():
    assert exact_duplicates(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4]]
    assert exact_duplicates(["a", "b"]) == []


def test_near_duplicates_above_the_threshold_leave_out_exact_groups():
    # images 0, 1 at 0 and 1 degree (cos 0.99985), 2 identical to 0 (an exact copy), 3 far away
    points = unit(angle(0), angle(1), angle(0), angle(60))
    found = near_duplicates(points, 0.999, exact=[[0, 2]])
    cosine = pytest.approx(np.cos(np.radians(1)), rel=1e-5)
    assert found == [NearDuplicate(0, 1, cosine), NearDuplicate(1, 2, cosine)]
    assert near_duplicates(points, 0.999) == [
        NearDuplicate(0, 2, pytest.approx(1.0)),
        NearDuplicate(0, 1, cosine),
        NearDuplicate(1, 2, cosine),
    ]


def test_centres_sum_and_count_each_identity():
    points = unit(angle(0), angle(90), angle(0))
    centres = identity_centres(points, np.array([0, 0, 2]), 3)
    np.testing.assert_allclose(centres.sums, [[1, 1], [0, 0], [1, 0]], atol=1e-6)
    assert centres.counts.tolist() == [2, 0, 1]
    np.testing.assert_allclose(centres.unit, [[0.5**0.5, 0.5**0.5], [0, 0], [1, 0]], atol=1e-6)


def test_a_label_error_is_closer_to_another_identity_than_to_its_own_others():
    # identity 0: 0, 10 and 95 degrees (the last one mislabelled); identity 1: 85 and 90 degrees;
    # identity 2: one image (never judged)
    points = unit(angle(0), angle(10), angle(95), angle(85), angle(90), angle(200))
    labels = np.array([0, 0, 0, 1, 1, 2])
    centres = identity_centres(points, labels, 3)
    errors = label_errors(points, labels, centres, margin=0.2)
    # image 2: own centre (0 + 10 degrees) at 5 degrees -> cos 90; identity 1's centre at 87.5 -> cos 7.5
    assert errors == [
        LabelError(2, pytest.approx(np.cos(np.radians(90)), abs=1e-5), 1, pytest.approx(np.cos(np.radians(7.5))))
    ]
    assert label_errors(points, labels, centres, margin=1.5) == []


def test_merges_pair_identities_with_close_centres():
    points = unit(angle(0), angle(10), angle(4), angle(6), angle(90))
    centres = identity_centres(points, np.array([0, 0, 1, 1, 2]), 3)
    assert identity_merges(centres, 0.99) == [Merge(0, 1, pytest.approx(1.0, abs=1e-6))]
    assert identity_merges(centres, 1.01) == []


def test_overlap_pairs_identities_with_another_sets_people():
    centres = identity_centres(unit(angle(0), angle(90), angle(180)), np.array([0, 1, 2]), 3)
    people = identity_centres(unit(angle(88), angle(92), angle(300)), np.array([0, 0, 1]), 2)
    assert overlap(centres, people, 0.9) == [Overlap(1, 0, pytest.approx(1.0, abs=1e-6))]


def test_identities_without_an_embedded_image_are_never_named():
    # identity 1 lost its only image (unreadable or no face): its zero centre must not be anyone's closest.
    # Identity 0's centre is at 85 degrees, identity 2's at 182.5: image 1 (170) is 12.5 degrees from the latter
    points = unit(angle(0), angle(170), angle(180), angle(185))
    labels = np.array([0, 0, 2, 2])
    centres = identity_centres(points, labels, 3)
    assert centres.present.tolist() == [0, 2]
    errors = label_errors(points, labels, centres, margin=0.0)
    assert [(error.index, error.other_label) for error in errors] == [(1, 2)]
    assert identity_merges(centres, -1.0) == [Merge(0, 2, pytest.approx(np.cos(np.radians(97.5)), abs=1e-5))]
    people = identity_centres(unit(angle(180)), np.array([1]), 2)
    assert overlap(centres, people, -1.0) == [
        Overlap(2, 1, pytest.approx(np.cos(np.radians(2.5)), abs=1e-5)),
        Overlap(0, 1, pytest.approx(np.cos(np.radians(95)), abs=1e-5)),
    ]
