"""IJB-B/C 1:1 protocol: readers on the official file layout, pooling and pair scores against a plain per-template
loop, the scikit-learn ROC re-implementation and insightface's nearest-FPR rule on hand-worked examples."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.data.align import ARCFACE_TEMPLATE
from facerec.data.protocols import ijb_meta
from facerec.data.protocols.ijb import AlignedImages, load_ijb
from facerec.data.protocols.ijb_meta import read_template_media, read_template_pairs
from facerec.data.text import TextFileError
from facerec.eval.ijb import (
    FAR_TARGETS_IJB,
    far_key,
    ijb_verification,
    image_features,
    pair_scores,
    pool_templates,
    roc_points,
    tar_at_far_nearest,
)
from facerec.eval.verification import FAR_TARGETS
from facerec.eval_sets import check_eval_sets
from tests.helpers import eval_set_entry

EMBEDDING = 8


def meta_paths(root: Path) -> tuple[Path, Path]:
    return root / "meta" / "ijbc_face_tid_mid.txt", root / "meta" / "ijbc_template_pair_label.txt"


def write_mini_ijb(root: Path, rng: np.random.Generator) -> dict:
    """40 templates of 1-6 images over 1-3 medias, 300 labelled pairs, in ``root/meta`` as IJB-C lays them out."""
    template_ids = rng.choice(np.arange(1, 5000), size=40, replace=False)
    lines, subject = [], {}
    for template in template_ids:
        subject[int(template)] = int(rng.integers(0, 8))
        media_ids = rng.choice([7, 11, 12, 40, 41], size=int(rng.integers(1, 4)), replace=False)  # shared ids
        for _ in range(int(rng.integers(1, 7))):
            lines.append((int(template), int(rng.choice(media_ids))))
    lines = [lines[k] for k in rng.permutation(len(lines))]
    face_tid_mid, pair_label = meta_paths(root)
    face_tid_mid.parent.mkdir(parents=True)
    face_tid_mid.write_text("".join(f"{k + 1}.jpg {t} {m}\n" for k, (t, m) in enumerate(lines)))
    first, second = rng.choice(template_ids, size=(2, 300))
    labels = [int(subject[int(a)] == subject[int(b)]) for a, b in zip(first, second, strict=True)]
    assert 0 < sum(labels) < len(labels)
    pair_label.write_text("".join(f"{a} {b} {y}\n" for a, b, y in zip(first, second, labels, strict=True)))
    return {"lines": lines, "pairs": list(zip(first.tolist(), second.tolist(), labels, strict=True))}


def reference_template_features(raw, scores, lines, use_norm_score, use_detector_score) -> dict[int, np.ndarray]:
    """Plain loop: per template a dict of medias, each media's mean, their sum, normalised."""
    by_template: dict[int, dict[int, list[np.ndarray]]] = {}
    for k, (template, media) in enumerate(lines):
        feature = raw[k].astype(np.float64)
        if not use_norm_score:
            feature = feature / np.linalg.norm(feature)
        if use_detector_score:
            feature = feature * scores[k]
        by_template.setdefault(template, {}).setdefault(media, []).append(feature)
    result = {}
    for template, medias in by_template.items():
        total = np.zeros(raw.shape[1])
        for features in medias.values():
            total = total + sum(features) / len(features)
        result[template] = total / np.linalg.norm(total)
    return result


@pytest.mark.parametrize("use_norm_score", [False, True])
@pytest.mark.parametrize("use_detector_score", [False, True])
def test_mini_ijb_matches_plain_loop(tmp_path, use_norm_score, use_detector_score):
    rng = np.random.default_rng(0)
    written = write_mini_ijb(tmp_path, rng)
    face_tid_mid, pair_label = meta_paths(tmp_path)
    names, templates, medias = read_template_media(face_tid_mid)
    template1, template2, labels = read_template_pairs(pair_label)
    assert names == [f"{k + 1}.jpg" for k in range(len(written["lines"]))]
    assert list(zip(templates.tolist(), medias.tolist(), strict=True)) == written["lines"]
    assert list(zip(template1.tolist(), template2.tolist(), labels.tolist(), strict=True)) == written["pairs"]
    assert templates.dtype == medias.dtype == template1.dtype == labels.dtype == np.int64

    raw = rng.normal(size=(len(names), EMBEDDING)) * rng.uniform(0.5, 3.0, size=(len(names), 1))
    detector = rng.uniform(0.3, 1.0, size=len(names))
    features = image_features(raw, detector, use_norm_score, use_detector_score)
    template_features, template_ids = pool_templates(features, templates, medias)

    expected = reference_template_features(raw, detector, written["lines"], use_norm_score, use_detector_score)
    assert template_ids.tolist() == sorted(expected)
    np.testing.assert_allclose(template_features, np.stack([expected[t] for t in sorted(expected)]), atol=1e-10)

    scores = pair_scores(template_features, template_ids, template1, template2, chunk=37)
    expected_scores = [float(expected[a] @ expected[b]) for a, b, _ in written["pairs"]]
    np.testing.assert_allclose(scores, expected_scores, atol=1e-10)

    metrics, roc = ijb_verification(
        raw, detector, templates, medias, template1, template2, labels, use_norm_score, use_detector_score
    )
    # The chain's ROC is the curve of its own scores (the reference scores differ in the last bits, which may
    # reorder near-ties such as self-pairs at cosine ~1).
    reference_roc = roc_points(labels, scores)
    np.testing.assert_array_equal(roc.fpr, reference_roc.fpr)
    np.testing.assert_array_equal(roc.tpr, reference_roc.tpr)
    assert list(metrics) == [far_key(t) for t in FAR_TARGETS_IJB] + ["auc"]
    assert metrics == pytest.approx(tar_at_far_nearest(reference_roc.fpr, reference_roc.tpr) | {"auc": metrics["auc"]})
    assert 0.0 <= metrics["auc"] <= 1.0


def test_pooling_groups_medias_within_templates():
    features = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0], [5.0, 5.0]])
    templates = np.array([2, 2, 2, 9, 9])
    medias = np.array([4, 4, 6, 4, 8])  # media 4 in both templates: two separate medias
    pooled, ids = pool_templates(features, templates, medias)
    assert ids.tolist() == [2, 9]
    template2 = np.array([0.5, 0.5]) + np.array([3.0, 1.0])  # mean of media 4, plus the single image of media 6
    template9 = np.array([0.0, 2.0]) + np.array([5.0, 5.0])
    np.testing.assert_allclose(pooled, [template2 / np.linalg.norm(template2), template9 / np.linalg.norm(template9)])


def test_image_features_normalise_then_weight():
    raw = np.array([[3.0, 4.0], [0.0, 2.0]])
    detector = np.array([0.5, 2.0])
    np.testing.assert_allclose(image_features(raw, None), [[0.6, 0.8], [0.0, 1.0]])
    np.testing.assert_allclose(image_features(raw, detector, use_detector_score=True), [[0.3, 0.4], [0.0, 2.0]])
    np.testing.assert_allclose(image_features(raw, detector, use_norm_score=True), raw)
    np.testing.assert_allclose(image_features(raw, detector, True, True), [[1.5, 2.0], [0.0, 4.0]])
    with pytest.raises(ValueError, match="detector scores"):
        image_features(raw, None, use_detector_score=True)


def test_roc_points_hand_worked_ties_and_dropped_points():
    # Sorted by score: 0.8 holds a genuine and an impostor pair (one point, diagonal step). Cumulative (fp, tp):
    # 0.9 (0,1), 0.8 (1,2), 0.7 (1,3), 0.6 (1,4), 0.5 (2,4), 0.4 (3,4), 0.3 (4,4). Zero second differences in both
    # counts at 0.7 (inside the vertical run), 0.5 and 0.4 (inside the horizontal run): dropped.
    scores = np.array([0.5, 0.8, 0.3, 0.9, 0.6, 0.8, 0.4, 0.7])
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    fpr, tpr, thresholds = roc_points(labels, scores)
    np.testing.assert_array_equal(fpr, [0.0, 0.0, 0.25, 0.25, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 0.25, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.6, 0.3])


def test_roc_points_keeps_collinear_points_with_uneven_steps():
    # (fp, tp) = (0,1), (1,2), (3,4): geometrically collinear, but the fp steps 1 then 2 (second difference 1),
    # so scikit-learn's rule keeps the middle point.
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7])
    labels = np.array([1, 1, 0, 1, 1, 0, 0])
    fpr, tpr, thresholds = roc_points(labels, scores)
    np.testing.assert_array_equal(fpr, [0.0, 0.0, 1 / 3, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 0.25, 0.5, 1.0])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.7])
    # Two distinct scores: nothing to drop.
    fpr, tpr, _ = roc_points(np.array([1, 0, 1]), np.array([0.2, 0.2, 0.1]))
    np.testing.assert_array_equal(fpr, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 0.5, 1.0])


def test_roc_points_refuses_bad_inputs():
    with pytest.raises(ValueError, match="both"):
        roc_points(np.array([1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="finite"):
        roc_points(np.array([1, 0]), np.array([np.nan, 0.2]))
    with pytest.raises(ValueError, match="0 or 1"):
        roc_points(np.array([2, 0]), np.array([0.1, 0.2]))


def insightface_nearest(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """insightface's rule written out: reverse the curve, smallest (distance, index) pair."""
    reversed_fpr, reversed_tpr = fpr[::-1], tpr[::-1]
    _, index = min((abs(value - target), k) for k, value in enumerate(reversed_fpr))
    return float(reversed_tpr[index])


def test_tar_at_far_nearest_picks_closest_point():
    fpr = np.array([0.0, 0.0, 0.25, 0.25, 1.0])
    tpr = np.array([0.0, 0.25, 0.5, 1.0, 1.0])
    # 0.2: nearest FPR is 0.25, above the target; two points there: the last (highest TPR) wins.
    # 1e-3: nearest FPR is 0 (two points: TPR 0.25 wins over 0).
    assert tar_at_far_nearest(fpr, tpr, (0.2, 1e-3, 0.9)) == {
        "tar@far=2e-1": 1.0,
        "tar@far=1e-3": 0.25,
        "tar@far=9e-1": 1.0,
    }
    # Equal distance to two different FPRs (0.25 and 0.75 from 0.5): the later point on the curve.
    fpr, tpr = np.array([0.0, 0.25, 0.75, 1.0]), np.array([0.0, 0.5, 0.8, 1.0])
    assert tar_at_far_nearest(fpr, tpr, (0.5,)) == {"tar@far=5e-1": 0.8}
    for target in (0.5, 0.3, 0.1, 0.0, 0.9):
        assert tar_at_far_nearest(fpr, tpr, (target,))[far_key(target)] == insightface_nearest(fpr, tpr, target)


def test_far_keys_match_lfw_keys():
    assert [far_key(t) for t in FAR_TARGETS_IJB] == [f"tar@far=1e-{k}" for k in (6, 5, 4, 3, 2, 1)]
    assert {far_key(t) for t in FAR_TARGETS.values()} == set(FAR_TARGETS)
    assert far_key(2.5e-4) == "tar@far=2.5e-4"


def test_readers_name_the_bad_line(tmp_path):
    media = tmp_path / "ijbb_face_tid_mid.txt"
    media.write_text("1.jpg 1 69544\n2.jpg 1 69544\n\n3.jpg 2\n")
    with pytest.raises(ValueError, match=r"ijbb_face_tid_mid\.txt:4: expected 3 fields"):
        read_template_media(media)
    media.write_text("1.jpg 1 69544\n2.jpg one 69544\n")
    with pytest.raises(ValueError, match=r":2: field 2 is not an integer: 'one'"):
        read_template_media(media)

    pairs = tmp_path / "ijbb_template_pair_label.txt"
    for text, message in [
        ("1 2 1\n3 4 0\n5 6 1 7\n", r":3: expected 3 fields"),
        ("1 2 1\n3 4\n5 6 1 7\n", r":2: expected 3 fields"),  # total count right, lines misaligned
        ("1 2 1\n\n3 4 0\n5 x 1\n", r":4: field 2 is not an integer: 'x'"),
        ("1 2 1\n3 4 0.5\n", r":2: field 3 is not an integer"),
        ("1 2 1\n3 99999999999999999999 0\n", r":2: field 2 is out of the int64 range"),
        ("1 2 1\n3 4 2\n", r":2: label must be 0 or 1, got 2"),
    ]:
        pairs.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_template_pairs(pairs)


def test_readers_accept_blank_lines_crlf_and_missing_final_newline(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(b"1 2 1\r\n\r\n  3\t4 0  \r\n5 6 1")
    template1, template2, labels = read_template_pairs(pairs)
    assert (template1.tolist(), template2.tolist(), labels.tolist()) == ([1, 3, 5], [2, 4, 6], [1, 0, 1])
    pairs.write_bytes(b"\xef\xbb\xbf1 2 1\n")  # a UTF-8 byte-order mark (Windows editors) is accepted
    assert [column.tolist() for column in read_template_pairs(pairs)] == [[1], [2], [1]]
    media = tmp_path / "media.txt"
    media.write_bytes(b"\xef\xbb\xbf1.jpg 1 2\n")
    assert read_template_media(media)[0] == ["1.jpg"]


@pytest.mark.parametrize("reader", [read_template_media, read_template_pairs])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"meta.txt is empty: expected lines '(image_name|template_id1)"),
        (b"\n  \r\n", r"meta.txt is empty"),
        (b"1 2 1\n\xe9.jpg 1 2\n", r"meta.txt:2: byte 0xe9 at offset 6 is not UTF-8; save the file as UTF-8"),
        (None, r"meta.txt is not a regular file \(a folder\?\): expected a text file of lines"),
    ],
    ids=["empty", "blank", "latin-1", "folder"],
)
def test_readers_refuse_empty_undecodable_and_folder(tmp_path, reader, content, message):
    path = tmp_path / "meta.txt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(TextFileError, match=message):
        reader(path)


def test_duplicated_image_line_and_contradictory_labels_are_refused(tmp_path, caplog):
    media = tmp_path / "ijbc_face_tid_mid.txt"
    media.write_text("1.jpg 1 10\n2.jpg 1 10\n\n1.jpg 1 10\n")
    with pytest.raises(TextFileError, match=r"face_tid_mid.txt:4: image 1.jpg is already listed on line 1"):
        read_template_media(media)
    for name in ["../secret.jpg", "a/../../b.jpg", "/etc/passwd", "\\\\server\\x.jpg", "C:x.jpg"]:
        media.write_text(f"1.jpg 1 10\n{name} 1 10\n")
        with pytest.raises(TextFileError, match=r"face_tid_mid.txt:2: image name .* must be a path relative to"):
            read_template_media(media)
    pairs = tmp_path / "ijbc_template_pair_label.txt"
    pairs.write_text("1 2 1\n3 4 0\n\n2 1 0\n")
    with pytest.raises(TextFileError, match=r"pair_label.txt:4: templates 2 and 1 have label 0, but line 1 gives"):
        read_template_pairs(pairs)
    pairs.write_text("1 2 1\n3 4 0\n2 1 1\n")
    assert len(read_template_pairs(pairs)[0]) == 3
    assert "1 template pairs are listed more than once (e.g. lines 1 and 3)" in caplog.text


FACE = " ".join(f"{value:.4f}" for value in ARCFACE_TEMPLATE.ravel())


def write_meta(root: Path, pairs: str = "1 2 0\n1 1 1\n", landmarks: str | None = None) -> Path:
    """An IJB-C layout of two images (templates 1 and 2) without the images: enough for :func:`load_ijb`."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "loose_crop").mkdir(exist_ok=True)
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("1.jpg 1 10\n2.jpg 2 20\n")
    (root / "meta" / "ijbc_template_pair_label.txt").write_text(pairs)
    landmarks = landmarks or f"1.jpg {FACE} 0.9\n2.jpg {FACE} 0.8\n"
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text(landmarks)
    return root


@pytest.mark.parametrize(
    ("pairs", "landmarks", "message"),
    [
        (None, f"1.jpg {FACE} 0.9\n2.jpg {FACE} 0\n", r"5pts_score.txt:2: faceness score of 2.jpg is 0: expected"),
        (None, f"1.jpg {FACE} -0.5\n2.jpg {FACE}\n", r"5pts_score.txt:1: faceness score of 1.jpg is -0.5"),
        (None, f"1.jpg {FACE}\n2.jpg {' '.join(['5'] * 10)} 1\n", r"5pts_score.txt:2: .* the 5 points coincide"),
        ("1 2 0\n\n1 9 1\n", None, r"pair_label.txt:3: template_id2 9 has no images in .*face_tid_mid.txt"),
        ("7 2 0\n", None, r"pair_label.txt:1: template_id1 7 has no images .*\(1 pairs name unknown templates\)"),
    ],
)
def test_load_ijb_checks_scores_landmarks_and_templates_before_embedding(tmp_path, pairs, landmarks, message):
    root = write_meta(tmp_path / "IJBC", **({"pairs": pairs} if pairs else {}), landmarks=landmarks)
    with pytest.raises(TextFileError, match=message):
        load_ijb(root)
    with pytest.raises(ValueError, match=message):  # eval.py reads every set before embedding any
        check_eval_sets({"ijbc": eval_set_entry("ijb", root=str(root))})


def test_load_ijb_refuses_folders_in_place_of_files(tmp_path):
    root = write_meta(tmp_path / "IJBC")
    assert load_ijb(root).scores.tolist() == [0.9, 0.8]
    (root / "meta" / "ijbc_template_pair_label.txt").unlink()
    (root / "meta" / "ijbc_template_pair_label.txt").mkdir()
    with pytest.raises(TextFileError, match=r"pair_label.txt is not a regular file \(a folder\?\)"):
        load_ijb(root)
    write_meta(tmp_path / "other")
    (tmp_path / "other" / "loose_crop").rmdir()
    (tmp_path / "other" / "loose_crop").write_text("")
    with pytest.raises(TextFileError, match=r"loose_crop must be the folder of images"):
        load_ijb(tmp_path / "other")


def test_pair_file_fast_path(tmp_path, monkeypatch):
    monkeypatch.setattr(ijb_meta, "_first_bad_integer", lambda *args: pytest.fail("slow path used on a valid file"))
    rng = np.random.default_rng(1)
    values = rng.integers(1, 200_000, size=(3, 200_000))
    values[2] %= 2
    pairs = tmp_path / "ijbc_template_pair_label.txt"
    pairs.write_text("\n".join(map(" ".join, values.T.astype(str).tolist())) + "\n")
    template1, template2, labels = read_template_pairs(pairs)
    np.testing.assert_array_equal(np.stack([template1, template2, labels]), values)


def test_pair_naming_a_template_without_images_is_refused():
    pooled, ids = pool_templates(np.eye(3), np.array([10, 20, 30]), np.array([1, 1, 1]))
    np.testing.assert_allclose(pair_scores(pooled, ids, np.array([10, 30]), np.array([10, 20])), [1.0, 0.0])
    for first, second in [([10, 15], [20, 20]), ([10, 20], [30, 31]), ([5, 10], [20, 20])]:
        with pytest.raises(ValueError, match=r"template[12] (15|31|5) has no images"):
            pair_scores(pooled, ids, np.array(first), np.array(second))


def test_aligned_images_refuse_landmarks_off_the_image(tmp_path):
    image = tmp_path / "1.png"
    cv2.imwrite(str(image), np.zeros((120, 100, 3), np.uint8))
    landmarks = ARCFACE_TEMPLATE[None].copy()
    dataset = AlignedImages([image], landmarks, (112, 112), lambda image: {"image": image})
    assert dataset[0][0].shape == (112, 112, 3)
    landmarks += 200
    with pytest.raises(TextFileError, match=r"1.png \(120x100\): its landmarks: a point lies off the image by more"):
        dataset[0]
