"""IJB-B / IJB-C 1:1 template verification as insightface's ``arcface_torch/eval_ijbc.py`` (NumPy, float64).

Also reads the untrusted ``meta/ijb[bc]_*`` protocol files; bad lines raise ``TextFileError``."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from facerec.data.text import TextFileError, read_utf8
from facerec.eval.verification import RocCurve, area_under_curve, l2_normalize

log = logging.getLogger(__name__)

FAR_TARGETS_IJB = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PAIR_CHUNK = 100_000
MEDIA_LAYOUT = "image_name template_id media_id"
PAIR_LAYOUT = "template_id1 template_id2 label"
_WHITESPACE = np.isin(np.arange(256), (9, 10, 11, 12, 13, 32))  # bytes.split()'s ASCII whitespace, by byte value


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


def _line_field_counts(data: bytes) -> np.ndarray:
    """Field count (L,) of each line of ``data``, incl. a final line without newline."""
    if not data:
        return np.zeros(0, dtype=np.int64)
    buffer = np.frombuffer(data, dtype=np.uint8)
    space = _WHITESPACE[buffer]
    token_start = ~space
    token_start[1:] &= space[:-1]
    line_starts = np.r_[0, np.flatnonzero(buffer == 10) + 1]
    if line_starts[-1] == len(buffer):
        line_starts = line_starts[:-1]
    return np.add.reduceat(token_start, line_starts, dtype=np.int64)


def _check_fields(path: Path, counts: np.ndarray, n_fields: int, layout: str) -> np.ndarray:
    """1-based numbers of the non-blank lines; TextFileError naming the first line without ``n_fields`` fields."""
    bad = np.flatnonzero((counts != n_fields) & (counts != 0))
    if len(bad):
        line = int(bad[0]) + 1
        raise TextFileError(f"{path}:{line}: expected {n_fields} fields ({layout}), got {int(counts[bad[0]])}")
    return np.flatnonzero(counts) + 1


def _first_bad_integer(path: Path, data: bytes, columns: range) -> TextFileError:
    """TextFileError for the first line whose ``columns`` are not all int64 (slow; only after a failure)."""
    limits = np.iinfo(np.int64)
    for number, line in enumerate(data.split(b"\n"), start=1):
        for column, token in enumerate(line.split()):
            if column not in columns:
                continue
            try:
                value = int(token.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                text = token.decode("utf-8", "backslashreplace")
                return TextFileError(f"{path}:{number}: field {column + 1} is not an integer: {text!r}")
            if not limits.min < value < limits.max:
                return TextFileError(f"{path}:{number}: field {column + 1} is out of the int64 range: {value}")
    return TextFileError(f"{path}: could not parse the integer fields")


def pair_line_number(path: str | Path, index: int) -> int:
    """1-based line of pair ``index`` (0-based, blank lines skipped) in a ``*_template_pair_label.txt``."""
    return int(np.flatnonzero(_line_field_counts(read_utf8(path, PAIR_LAYOUT)))[index]) + 1


def _parse_integers(path: Path, data: bytes, count: int, columns: range) -> np.ndarray:
    """All tokens of ``data`` as int64 (count,), vectorised; TextFileError naming the first bad line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            values = np.fromstring(data, dtype=np.int64, sep=" ")  # text mode is not deprecated; C speed
    except (ValueError, DeprecationWarning):
        values = None
    limits = np.iinfo(np.int64)
    if values is None or len(values) != count or (values == limits.max).any() or (values == limits.min).any():
        raise _first_bad_integer(path, data, columns)
    return values


def read_template_media(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Reads ``*_face_tid_mid.txt`` (``image_name template_id media_id`` per line; blank lines skipped).

    Returns:
        ``(image_names, templates, medias)``: N names, (N,) int64 template and media ids.

    Raises:
        FileNotFoundError: No such file.
        TextFileError: Folder, empty or not UTF-8; or (naming file and line) a line without 3 fields, a
            non-integer id, an absolute name or one with ``..``, or a repeated image.
    """
    path = Path(path)
    data = read_utf8(path, f"lines '{MEDIA_LAYOUT}'")
    line_numbers = _check_fields(path, _line_field_counts(data), 3, MEDIA_LAYOUT)
    tokens = data.split()
    names = [name.decode() for name in tokens[0::3]]
    try:
        ids = np.array(tokens[1::3] + tokens[2::3], dtype=np.int64)
    except (ValueError, OverflowError):
        raise _first_bad_integer(path, data, range(1, 3)) from None
    for row, name in enumerate(names):
        if name.startswith(("/", "\\")) or ":" in name or ".." in name.replace("\\", "/").split("/"):
            raise TextFileError(
                f"{path}:{line_numbers[row]}: image name {name!r} must be a path relative to the image folder "
                "(loose_crop/), without '..' or a drive"
            )
    if len(set(names)) != len(names):
        first_row: dict[str, int] = {}
        for row, name in enumerate(names):
            if name in first_row:
                raise TextFileError(
                    f"{path}:{line_numbers[row]}: image {name} is already listed on line "
                    f"{line_numbers[first_row[name]]}: expected each image once"
                )
            first_row[name] = row
    return names, ids[: len(names)], ids[len(names) :]


def read_template_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads ``*_template_pair_label.txt`` (``template_id1 template_id2 label``, 1 = same) into three (P,) int64.

    A pair repeated (either order) with one label is kept, scored twice, with a warning.

    Raises:
        FileNotFoundError: No such file.
        TextFileError: Folder, empty or not UTF-8; or (naming file and line) a malformed line, a label not
            0/1, or a pair repeated with the other label.
    """
    path = Path(path)
    data = read_utf8(path, f"lines '{PAIR_LAYOUT}'")
    line_numbers = _check_fields(path, _line_field_counts(data), 3, PAIR_LAYOUT)
    values = _parse_integers(path, data, 3 * len(line_numbers), range(3)).reshape(-1, 3)
    bad_labels = np.flatnonzero((values[:, 2] != 0) & (values[:, 2] != 1))
    if len(bad_labels):
        row = int(bad_labels[0])
        raise TextFileError(f"{path}:{int(line_numbers[row])}: label must be 0 or 1, got {int(values[row, 2])}")
    _check_repeated_pairs(path, values, line_numbers)
    return values[:, 0].copy(), values[:, 1].copy(), values[:, 2].copy()


def _check_repeated_pairs(path: Path, values: np.ndarray, line_numbers: np.ndarray) -> None:
    """TextFileError for a pair listed with both labels; warning for one listed twice with one label."""
    first, second = np.minimum(values[:, 0], values[:, 1]), np.maximum(values[:, 0], values[:, 1])
    if first.min() >= 0 and second.max() < 2**31:  # fast path: one sort of packed keys, lines found only on a repeat
        keys = np.sort(first << 31 | second)
        if not (keys[1:] == keys[:-1]).any():
            return
    order = np.lexsort((second, first))
    repeated = (first[order][1:] == first[order][:-1]) & (second[order][1:] == second[order][:-1])
    if not repeated.any():
        return
    contradicting = np.flatnonzero(repeated & (values[order, 2][1:] != values[order, 2][:-1]))
    if len(contradicting):
        earlier, later = sorted(order[contradicting[0] : contradicting[0] + 2])
        raise TextFileError(
            f"{path}:{int(line_numbers[later])}: templates {int(values[later, 0])} and {int(values[later, 1])} "
            f"have label {int(values[later, 2])}, but line {int(line_numbers[earlier])} gives them label "
            f"{int(values[earlier, 2])}: expected one label per template pair"
        )
    earlier, later = sorted(order[np.flatnonzero(repeated)[0] :][:2])
    log.warning(
        "%s: %d template pairs are listed more than once (e.g. lines %d and %d); each copy is scored",
        path, int(repeated.sum()), int(line_numbers[earlier]), int(line_numbers[later]),
    )  # fmt: skip


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
