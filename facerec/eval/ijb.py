"""IJB-B / IJB-C 1:1 template verification, as insightface's ``arcface_torch/eval_ijbc.py`` computes it.

Pure NumPy functions on embeddings; the meta files are read by :mod:`facerec.data.protocols.ijb_meta`.

The protocol, step by step:

1. Image feature: the embedding of the image, plus the embedding of its mirror with flip test (done upstream,
   when embedding). Unless ``use_norm_score`` (insightface's N1) is on, each image feature is L2-normalised;
   then, if ``use_detector_score`` (D1) is on, it is multiplied by the detector's faceness score (normalise
   first, weight second). insightface's script turns N1, D1 and flip test all on, and so does ``eval.py``
   (:mod:`facerec.eval_sets`); these functions take them as arguments, off by default.
2. Template feature: the images of a template are grouped by media id; a media contributes the mean of its
   images' features, the template is the sum of its media features, L2-normalised (a zero sum stays zero).
3. Pair score: the dot product of the two normalised template features (cosine), in chunks of pairs.
4. ROC as scikit-learn's ``roc_curve(labels, scores)`` with its default ``drop_intermediate=True``; for each
   target FAR the TAR of the ROC point whose FPR is nearest to the target (ties in distance: the point with the
   larger FPR/TPR, since insightface searches the reversed curve and keeps the first minimum).

Everything is computed in float64 (insightface pools in float32 and normalises in float64).
"""

from __future__ import annotations

import logging

import numpy as np

from facerec.eval.verification import RocCurve, area_under_curve, l2_normalize

log = logging.getLogger(__name__)

FAR_TARGETS_IJB = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PAIR_CHUNK = 100_000


def far_key(target: float) -> str:
    """Metric name of a FAR target: ``1e-6`` → ``"tar@far=1e-6"`` (as ``tar@far=1e-3`` in verification.py)."""
    return f"tar@far={np.format_float_scientific(target, trim='-', exp_digits=1)}"


def _segment_sums(values: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Row sums of the segments ``values[order[starts[i]:starts[i + 1]]]`` (the last one runs to the end).

    Adds the k-th row of every segment longer than k, for k = 0, 1, …: as many vectorised steps as the longest
    segment (``np.add.reduceat`` along axis 0 is an order of magnitude slower on (469k, 512)).
    """
    sizes = np.diff(np.r_[starts, len(order)])
    sums = values[order[starts]]
    for k in range(1, int(sizes.max(initial=1))):
        longer = np.flatnonzero(sizes > k)
        sums[longer] += values[order[starts[longer] + k]]
    return sums


def image_features(
    raw: np.ndarray, scores: np.ndarray | None, use_norm_score: bool = False, use_detector_score: bool = False
) -> np.ndarray:
    """Per-image features entering template pooling, in float64. (N, E) → (N, E).

    Args:
        raw: (N, E) embeddings, flip test already summed (image + mirror) if used.
        scores: (N,) detector faceness scores; needed only with ``use_detector_score``.
        use_norm_score: N1: keep the embedding norm (no L2 normalisation).
        use_detector_score: D1: multiply each feature (after the optional normalisation) by its score.
    """
    features = np.asarray(raw, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"raw features must be (N, E), got shape {features.shape}")
    if not use_norm_score:
        features = l2_normalize(features)
    if use_detector_score:
        if scores is None:
            raise ValueError("use_detector_score needs the detector scores")
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(features),):
            raise ValueError(f"scores must be ({len(features)},), got shape {scores.shape}")
        features = features * scores[:, None]
    return features


def pool_templates(features: np.ndarray, templates: np.ndarray, medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Template features: per template, the sum over its medias of each media's mean image feature, normalised.

    Media ids are grouped within a template (one media id in two templates is two medias). Vectorised: one sort
    of the (template, media) keys and segment sums (images summed in file order, as a plain loop would); float64.

    Args:
        features: (N, E) image features (:func:`image_features`).
        templates: (N,) template id of each image.
        medias: (N,) media id of each image.

    Returns:
        (template_features, template_ids): (T, E) float64 unit rows (zero sums stay zero) and the (T,) sorted
        unique template ids they belong to.
    """
    features = np.asarray(features, dtype=np.float64)
    templates, medias = np.asarray(templates, dtype=np.int64), np.asarray(medias, dtype=np.int64)
    if features.ndim != 2 or templates.shape != (len(features),) or medias.shape != (len(features),):
        raise ValueError(
            f"mismatched inputs: features {features.shape}, templates {templates.shape}, medias {medias.shape}"
        )
    if len(features) == 0:
        return np.zeros((0, features.shape[1])), np.zeros(0, dtype=np.int64)
    order = np.lexsort((medias, templates))
    sorted_templates, sorted_medias = templates[order], medias[order]
    new_media = np.r_[True, (np.diff(sorted_templates) != 0) | (np.diff(sorted_medias) != 0)]
    media_starts = np.flatnonzero(new_media)
    media_sizes = np.diff(np.r_[media_starts, len(order)])
    media_means = _segment_sums(features, order, media_starts) / media_sizes[:, None]
    media_templates = sorted_templates[media_starts]
    template_starts = np.flatnonzero(np.r_[True, np.diff(media_templates) != 0])
    template_sums = _segment_sums(media_means, np.arange(len(media_means)), template_starts)
    return l2_normalize(template_sums), media_templates[template_starts]


def template_rows(template_ids: np.ndarray, queried: np.ndarray, name: str = "template") -> np.ndarray:
    """Row of each queried id in the sorted ``template_ids``; ValueError naming the first id without images."""
    queried = np.asarray(queried, dtype=np.int64)
    rows = np.searchsorted(template_ids, queried)
    known = rows < len(template_ids)
    known[known] = template_ids[rows[known]] == queried[known]
    if not np.all(known):
        first = int(np.flatnonzero(~known)[0])
        missing = np.unique(queried[~known])
        raise ValueError(
            f"pair {first}: {name} {int(queried[first])} has no images ({len(missing)} unknown template id(s) "
            f"in the pairs, e.g. {missing[:5].tolist()})"
        )
    return rows


def pair_scores(
    template_features: np.ndarray,
    template_ids: np.ndarray,
    template1: np.ndarray,
    template2: np.ndarray,
    chunk: int = PAIR_CHUNK,
) -> np.ndarray:
    """Cosine of each template pair: dot product of the normalised template features, ``chunk`` pairs at a time.

    Args:
        template_features: (T, E) L2-normalised template features (:func:`pool_templates`).
        template_ids: (T,) sorted unique template ids of those rows.
        template1: (P,) first template id of each pair.
        template2: (P,) second template id of each pair.
        chunk: Pairs per block (bounds the (chunk, E) gathers).

    Returns:
        (P,) float64 scores.

    Raises:
        ValueError: When a pair names a template that has no images.
    """
    template_ids = np.asarray(template_ids, dtype=np.int64)
    if len(template1) != len(template2):
        raise ValueError(f"mismatched pairs: {len(template1)} first and {len(template2)} second templates")
    rows1 = template_rows(template_ids, template1, "template1")
    rows2 = template_rows(template_ids, template2, "template2")
    scores = np.empty(len(rows1), dtype=np.float64)
    for start in range(0, len(rows1), chunk):
        block = slice(start, start + chunk)
        scores[block] = np.einsum(
            "ij,ij->i", template_features[rows1[block]], template_features[rows2[block]], dtype=np.float64
        )
    return scores


def roc_points(labels: np.ndarray, scores: np.ndarray) -> RocCurve:
    """scikit-learn's ``roc_curve(labels, scores)`` with ``drop_intermediate=True``, re-implemented in NumPy.

    Scores are sorted descending; one point per distinct score (accepting ``score >= threshold``, so tied
    scores enter together); when there are more than two such points, a point is dropped when both the
    false-positive and the true-positive counts have zero second difference there (it lies inside a straight
    run: the first and last points always stay); then (0, 0) is prepended with threshold ``inf``.

    Args:
        labels: (P,) 1 for a genuine (same) pair, 0 for an impostor pair (bool accepted).
        scores: (P,) finite similarity scores, higher = more similar.

    Returns:
        RocCurve of (K + 1,) arrays: fpr and tpr increasing, thresholds decreasing from ``inf``.

    Raises:
        ValueError: On mismatched lengths, non-finite scores, labels other than 0/1, or a missing class.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"mismatched inputs: labels {labels.shape}, scores {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    positive = labels == 1
    if positive.all() or not positive.any():
        raise ValueError("a ROC curve needs both genuine (1) and impostor (0) pairs")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    true_positives = np.cumsum(positive[order], dtype=np.float64)[last_of_value]
    false_positives = (last_of_value + 1) - true_positives
    thresholds = sorted_scores[last_of_value]
    if len(thresholds) > 2:
        corner = (np.diff(false_positives, 2) != 0) | (np.diff(true_positives, 2) != 0)
        keep = np.flatnonzero(np.r_[True, corner, True])
        true_positives, false_positives, thresholds = true_positives[keep], false_positives[keep], thresholds[keep]
    fpr = np.r_[0.0, false_positives] / false_positives[-1]
    tpr = np.r_[0.0, true_positives] / true_positives[-1]
    return RocCurve(fpr, tpr, np.r_[np.inf, thresholds])


def tar_at_far_nearest(
    fpr: np.ndarray, tpr: np.ndarray, targets: tuple[float, ...] = FAR_TARGETS_IJB
) -> dict[str, float]:
    """TAR of the ROC point whose FPR is nearest (absolute difference) to each target FAR, as insightface reports.

    The nearest point may lie above the target. Among points at the same distance, the last one along the curve
    wins (insightface searches the reversed curve and keeps the first minimum: at one FPR, the highest TPR).

    Returns:
        ``{"tar@far=1e-6": tar, ...}``, one key per target (:func:`far_key`).
    """
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    if fpr.shape != tpr.shape or fpr.ndim != 1 or len(fpr) == 0:
        raise ValueError(f"fpr and tpr must be equal non-empty (K,) arrays, got {fpr.shape} and {tpr.shape}")
    metrics = {}
    for target in targets:
        distance = np.abs(fpr - target)
        nearest = int(np.flatnonzero(distance == distance.min())[-1])
        metrics[far_key(target)] = float(tpr[nearest])
    return metrics


def ijb_verification(
    raw_features: np.ndarray,
    scores: np.ndarray | None,
    templates: np.ndarray,
    medias: np.ndarray,
    template1: np.ndarray,
    template2: np.ndarray,
    labels: np.ndarray,
    use_norm_score: bool = False,
    use_detector_score: bool = False,
    targets: tuple[float, ...] = FAR_TARGETS_IJB,
) -> tuple[dict[str, float], RocCurve]:
    """The whole 1:1 protocol: image features → template features → pair scores → ROC → TAR at each FAR.

    Args:
        raw_features: (N, E) image embeddings (flip test already summed if used), rows in the order of the
            ``*_face_tid_mid.txt`` lines.
        scores: (N,) detector faceness scores (``*_name_5pts_score.txt``'s last column), or None without D1.
        templates: (N,) template id of each image.
        medias: (N,) media id of each image.
        template1: (P,) first template of each pair.
        template2: (P,) second template of each pair.
        labels: (P,) 1 = same subject, 0 = different.
        use_norm_score: N1 (see :func:`image_features`).
        use_detector_score: D1 (see :func:`image_features`).
        targets: FAR targets to report.

    Returns:
        ``(metrics, roc)``: ``tar@far=1e-6`` … ``tar@far=1e-1`` (nearest-FPR rule) and ``auc`` (trapezoid on
        the ROC), and the :func:`roc_points` curve of the pair scores.
    """
    features = image_features(raw_features, scores, use_norm_score, use_detector_score)
    template_features, template_ids = pool_templates(features, templates, medias)
    roc = roc_points(labels, pair_scores(template_features, template_ids, template1, template2))
    metrics = tar_at_far_nearest(roc.fpr, roc.tpr, targets)
    return metrics | {"auc": area_under_curve(roc.fpr, roc.tpr)}, roc
