"""IJB-B / IJB-C 1:1 template verification as insightface's ``arcface_torch/eval_ijbc.py`` (NumPy, float64).

Pure functions on embeddings; the meta files are read by :mod:`facerec.data.protocols.ijb_meta`.
"""

from __future__ import annotations

import logging

import numpy as np

from facerec.eval.verification import RocCurve, area_under_curve, l2_normalize

log = logging.getLogger(__name__)

FAR_TARGETS_IJB = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PAIR_CHUNK = 100_000


def far_key(target: float) -> str:
    """Metric name of a FAR target: ``1e-6`` → ``"tar@far=1e-6"``."""
    return f"tar@far={np.format_float_scientific(target, trim='-', exp_digits=1)}"


def _segment_sums(values: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of ``values[order[starts[i]:starts[i + 1]]]`` (last to the end), one step per row of the longest.

    ``np.add.reduceat`` on axis 0 is ~10× slower on (469k, 512).
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
    """Image features (N, E) float64 for pooling: L2-normalised unless N1, then times the score if D1.

    Args:
        raw: (N, E) embeddings (flip-TTA summed if used).
        scores: (N,) detector faceness scores; needed only with ``use_detector_score``.
        use_norm_score: insightface's N1: keep the norm.
        use_detector_score: insightface's D1: weight by ``scores``.

    Raises:
        ValueError: Wrong shapes, or D1 without ``scores``.
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
    """Template features: L2-normalised sum over a template's medias of each media's mean image feature.

    Medias are keyed by (template, media) id. ``features`` (N, E); ``templates``, ``medias`` (N,).

    Returns:
        ``(template_features, template_ids)``: (T, E) float64 unit rows (zero stays zero), (T,) sorted ids.
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
    """Cosine scores (P,) float64 of template pairs, ``chunk`` pairs at a time.

    ``template_features`` (T, E) unit rows with sorted ``template_ids`` (T,) (:func:`pool_templates`);
    ``template1``, ``template2`` (P,) ids. Raises ValueError for a template without images.
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
    """scikit-learn's ``roc_curve(labels, scores)`` (``drop_intermediate=True``) in NumPy.

    Args:
        labels: (P,) 1 genuine, 0 impostor (bool accepted).
        scores: (P,) finite similarities, higher = more similar.

    Returns:
        RocCurve of (K + 1,) arrays from (0, 0); thresholds decreasing from ``inf``.

    Raises:
        ValueError: Mismatched lengths, non-finite scores, labels not 0/1, or a missing class.
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
    """``{far_key(t): TAR}`` at the ROC point with FPR nearest to each target t (may exceed t), as insightface.

    Ties go to the last point along the curve (insightface's reversed search). ValueError on bad shapes.
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
    """The 1:1 protocol: image features → template features → pair cosines → ROC → TAR at each FAR.

    insightface's script (and ``eval.py``) turns N1, D1 and flip test on; here they are off by default.
    Pooling is float64 (insightface pools in float32).

    Args:
        raw_features: (N, E) embeddings (flip-TTA summed if used), in ``*_face_tid_mid.txt`` order.
        scores: (N,) faceness scores (``*_name_5pts_score.txt``'s last column), or None without D1.
        templates: (N,) template id of each image.
        medias: (N,) media id of each image.
        template1: (P,) first template of each pair.
        template2: (P,) second template of each pair.
        labels: (P,) 1 = same subject, 0 = different.
        use_norm_score: N1 (see :func:`image_features`).
        use_detector_score: D1 (see :func:`image_features`).
        targets: FAR targets to report.

    Returns:
        ``(metrics, roc)``: ``tar@far=…`` per target (:func:`tar_at_far_nearest`), ``auc`` (trapezoid);
        the :func:`roc_points` curve.
    """
    features = image_features(raw_features, scores, use_norm_score, use_detector_score)
    template_features, template_ids = pool_templates(features, templates, medias)
    roc = roc_points(labels, pair_scores(template_features, template_ids, template1, template2))
    metrics = tar_at_far_nearest(roc.fpr, roc.tpr, targets)
    return metrics | {"auc": area_under_curve(roc.fpr, roc.tpr)}, roc
