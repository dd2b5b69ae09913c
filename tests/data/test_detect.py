"""Face detection (MTCNN with facenet-pytorch's weights), the one-face rule, and ``align --detect``."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facerec.data.__main__ import main
from facerec.data.decode import encode_jpeg, read_image
from facerec.data.detection.choice import Outcome, choose_face, priority
from facerec.data.detection.mtcnn import FaceDetector, Faces
from facerec.data.detection.networks import PNet, RNet, load_networks, load_weights, weights_folder
from facerec.errors import DataFileError
from tests.helpers import SHARED_DATA

FRAMES = SHARED_DATA / "lfw_folds1-5" / "frames"
needs_frames = pytest.mark.skipif(not FRAMES.is_dir(), reason=f"real LFW frames not found: {FRAMES}")
PHOTOS = [("Abel_Pacheco", 1), ("Abel_Pacheco", 4), ("Akhmed_Zakayev", 1), ("Akhmed_Zakayev", 3)]
PHOTOS += [("Adrien_Brody", 1), ("Adrien_Brody", 2), ("Abdullah_Gul", 1), ("Abdullah_Gul", 6)]
"""Frames read by these tests; Adrien_Brody_0002 and Abdullah_Gul_0006 show a second face."""


def frame_paths() -> list[Path]:
    return [FRAMES / name / f"{name}_{number:04d}.jpg" for name, number in PHOTOS]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Identity folders with the frames of PEOPLE, a blank photo, a corrupt file and a photo in the root."""
    src = tmp_path / "photos"
    for path in frame_paths():
        (src / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / path.parent.name / path.name)
    (src / "Nobody").mkdir()
    (src / "Nobody" / "Nobody_0001.jpg").write_bytes(encode_jpeg(np.full((250, 250, 3), 128, np.uint8)))
    (src / "Nobody" / "Nobody_0002.jpg").write_bytes(b"not a jpeg")
    shutil.copy(frame_paths()[0], src / "loose.jpg")
    return src


def test_the_weights_load_with_weights_only_into_networks_of_their_shapes():
    pnet, rnet, onet = load_networks()
    assert not any(p.requires_grad for net in (pnet, rnet, onet) for p in net.parameters())
    offsets, probability = pnet(torch.zeros(2, 3, 16, 12))
    assert offsets.shape == (2, 4, 3, 1) and probability.shape == (2, 3, 1)
    offsets, probability = rnet(torch.zeros(5, 3, 24, 24))
    assert offsets.shape == (5, 4) and probability.shape == (5,)
    offsets, points, probability = onet(torch.zeros(5, 3, 48, 48))
    assert offsets.shape == (5, 4) and points.shape == (5, 10) and probability.shape == (5,)
    assert ((probability >= 0) & (probability <= 1)).all()


def test_missing_foreign_or_unsafe_weight_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="pnet.pt"):
        load_networks(tmp_path)
    unsafe = tmp_path / "pnet.pt"
    unsafe.write_bytes(pickle.dumps(print, protocol=2))  # a global a weights-only unpickler refuses
    with pytest.raises(DataFileError, match=r"pnet\.pt is not a weights file torch can read safely"):
        load_weights(PNet(), unsafe)
    torch.save(RNet().state_dict(), unsafe)
    with pytest.raises(DataFileError, match=r"pnet\.pt does not hold PNet's weights"):
        load_weights(PNet(), unsafe)
    torch.save([torch.zeros(1)], unsafe)
    with pytest.raises(DataFileError, match="expected a state dict of PNet, got list"):
        load_weights(PNet(), unsafe)
    assert {path.name for path in weights_folder().glob("*.pt")} >= {"pnet.pt", "rnet.pt", "onet.pt"}


def test_bad_settings_and_images_are_refused(detector):
    for options, message in [
        ({"min_face_size": 5}, "min_face_size"),
        ({"thresholds": (0.6, 0.7)}, "thresholds"),
        ({"factor": 1.0}, "factor"),
    ]:
        with pytest.raises(ValueError, match=message):
            FaceDetector(**options)
    for image, message in [
        (np.zeros((20, 20), np.uint8), "shape"),
        (np.zeros((20, 20, 3), np.float32), "float32"),
        (np.zeros((0, 20, 3), np.uint8), "shape"),
        ([[0]], "list"),
    ]:
        with pytest.raises(ValueError, match=rf"image 1: expected an RGB uint8 \(H, W, 3\) array, got .*{message}"):
            detector.detect([np.zeros((30, 30, 3), np.uint8), image])


def test_blank_and_tiny_images_have_no_face(detector):
    blank, tiny = np.full((120, 90, 3), 200, np.uint8), np.zeros((10, 10, 3), np.uint8)
    for faces in detector.detect([blank, tiny]):
        assert len(faces) == 0
        assert faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 5, 2)
        assert choose_face(faces, (120, 90)).outcome is Outcome.NO_FACE


@needs_frames
def test_real_frames_give_the_face_and_its_five_landmarks_batched_as_one_by_one(detector):
    images = [read_image(path) for path in frame_paths()]
    images.append(np.ascontiguousarray(images[0][20:230, 30:220]))  # another size: its own batch
    batched = detector.detect(images, batch_size=3)
    for image, faces in zip(images, batched, strict=True):
        alone = detector.detect([image])[0]
        np.testing.assert_allclose(faces.scores, alone.scores, atol=1e-5)
        np.testing.assert_allclose(faces.landmarks, alone.landmarks, atol=1e-3)
        choice = choose_face(faces, image.shape[:2])
        assert choice.index is not None and faces.scores[choice.index] > 0.95
        assert np.all(np.diff(faces.scores) <= 0), "faces are sorted by score"
        (left_eye, right_eye, nose, left_mouth, right_mouth) = choice.landmarks
        assert left_eye[0] + 20 < right_eye[0] and left_mouth[0] + 20 < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
        box = faces.boxes[choice.index]
        assert (box[:2] <= choice.landmarks.min(axis=0)).all() and (choice.landmarks.max(axis=0) <= box[2:]).all()
    # LFW frames are centred on the person: the kept face's eyes lie near the frame's centre line, in its top half.
    for faces, image in zip(batched[:-1], images[:-1], strict=True):
        eyes = choose_face(faces, image.shape[:2]).landmarks[:2].mean(axis=0)
        assert abs(eyes[0] - 125) < 25 and 90 < eyes[1] < 135
    assert [choose_face(f, (250, 250)).outcome for f in batched[4:8]] == [Outcome.ONE_FACE, Outcome.SEVERAL_FACES] * 2


@needs_frames
def test_the_cascade_agrees_with_facenet_pytorchs_own_mtcnn(detector):
    """The reference: facenet-pytorch's MTCNN code (when it imports here), with the same weights and thresholds.

    The stages are the same; the windows are cut differently (the reference truncates boxes to whole pixels and
    stretches a window cut by the image's edge, facerec pads it with zeros as the MTCNN paper's code does), so a
    face whose windows reach past the image's edge moves by a few pixels. With the reference's window cutting
    patched in, the landmarks of these frames agree to 1e-4 pixels (checked when this test was written).
    """
    facenet_pytorch = pytest.importorskip("facenet_pytorch", reason="facenet-pytorch's code does not import here")
    reference = facenet_pytorch.MTCNN(keep_all=True, device="cpu")
    errors = []
    for path in frame_paths()[:4]:
        image = read_image(path)
        boxes, scores, landmarks = (np.asarray(x).astype(np.float32) for x in reference.detect(image, landmarks=True))
        order = np.argsort(-scores)  # the reference sorts by box size, facerec by score
        ours = detector.detect([image])[0]
        assert len(ours) == len(scores)
        np.testing.assert_allclose(ours.scores, scores[order], atol=0.01)
        np.testing.assert_allclose(ours.boxes, boxes[order], atol=8.0)
        errors.append(np.abs(ours.landmarks - landmarks[order]).reshape(-1))
    errors = np.concatenate(errors)
    assert errors.max() < 6 and errors.mean() < 1.5, errors


def test_the_rule_keeps_the_largest_times_most_central_face_above_the_minimum_score():
    boxes = np.array([[0, 0, 60, 60], [70, 70, 120, 120], [100, 100, 105, 105]], np.float32)
    faces = Faces(boxes, np.array([0.99, 0.95, 0.999], np.float32), np.zeros((3, 5, 2), np.float32))
    # The first is larger (3600 vs 2500 px) but off-centre by 0.7 of the half diagonal, the second by 0.05.
    np.testing.assert_allclose(priority(boxes[:2], (200, 200)), [3600 * 0.3, 2500 * 0.95])
    choice = choose_face(faces, (200, 200))
    assert choice.outcome is Outcome.SEVERAL_FACES and choice.index == 1
    assert choose_face(faces, (200, 200), min_score=0.96).index == 0  # the central face is below the minimum
    single = choose_face(faces, (200, 200), min_score=0.995)
    assert single.outcome is Outcome.ONE_FACE and single.index == 2
    low = choose_face(faces, (200, 200), min_score=0.9999)
    assert low.outcome is Outcome.LOW_SCORE and low.index is None and low.landmarks is None
    with pytest.raises(ValueError, match="min_score"):
        choose_face(faces, (200, 200), min_score=1.5)


@needs_frames
def test_align_detect_writes_crops_under_the_same_paths_and_reports_every_other_photo(photo_folder, tmp_path, capsys):
    dst = tmp_path / "aligned"
    assert main(["align", str(photo_folder), str(dst), "--detect", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "several_faces" in out and "photos/s" in out
    for path in frame_paths():
        crop = read_image(dst / path.parent.name / path.name)
        assert crop.shape == (112, 112, 3)
    assert (dst / "loose.jpg").is_file()
    report = json.loads((dst / "detection_report.json").read_text())
    assert report["counts"] == {"one_face": 7, "several_faces": 2, "low_score": 0, "no_face": 1, "unreadable": 1}
    assert report["photos"] == 11 and report["kept"] == 9 and report["photos_per_second"] > 0
    assert report["detector"]["weights"] == "facenet-pytorch==2.6.0" and report["min_score"] == 0.9
    problems = {problem["path"]: problem for problem in report["problems"]}
    assert problems["Nobody/Nobody_0001.jpg"]["status"] == "no_face"
    assert "cannot decode" in problems["Nobody/Nobody_0002.jpg"]["error"]
    several = problems["Abdullah_Gul/Abdullah_Gul_0006.jpg"]
    assert several["status"] == "several_faces" and len(several["faces"]) == 2 and several["kept"] == 0
    assert not (dst / "Nobody").exists()
    assert "no_face" in (dst / "detection_report.txt").read_text()

    # landmarks.txt re-aligns without detection, at another size too.
    again = tmp_path / "again"
    assert main(["align", str(photo_folder), str(again), "--landmarks", str(dst / "landmarks.txt")]) == 0
    first = frame_paths()[0].relative_to(FRAMES)
    difference = np.abs(read_image(again / first).astype(int) - read_image(dst / first).astype(int))
    assert difference.mean() < 1.5
    narrow = tmp_path / "narrow"
    assert main(["align", str(photo_folder), str(narrow), "--detect", "--size", "112", "96", "--min-score", "1"]) == 0
    report = json.loads((narrow / "detection_report.json").read_text())
    assert report["counts"]["low_score"] == 9 and report["kept"] == 0
    capsys.readouterr()


@needs_frames
def test_align_detect_checks_its_folders_and_options_before_any_work(photo_folder, tmp_path, capsys):
    dst = tmp_path / "aligned"
    dst.mkdir()
    (dst / "mine.txt").write_text("keep me")
    assert main(["align", str(photo_folder), str(dst), "--detect"]) == 2
    assert "is not empty: pass --overwrite" in capsys.readouterr().err
    assert main(["align", str(photo_folder), str(photo_folder / "out"), "--detect"]) == 2
    assert "inside the image folder" in capsys.readouterr().err
    assert main(["align", str(tmp_path / "nowhere"), str(tmp_path / "x"), "--detect"]) == 2
    assert "photo folder not found" in capsys.readouterr().err
    assert main(["align", str(photo_folder), str(tmp_path / "x"), "--detect", "--min-score", "2"]) == 2
    assert "--min-score must be in [0, 1]" in capsys.readouterr().err
    assert main(["align", str(photo_folder), str(tmp_path / "x"), "--landmarks", "f.txt", "--overwrite"]) == 2
    assert "--overwrite is an option of --detect" in capsys.readouterr().err
    (photo_folder / "odd.pgm").write_bytes(b"P5 1 1 255 \x00")
    assert main(["align", str(photo_folder), str(tmp_path / "x"), "--detect"]) == 2
    assert "odd.pgm" in capsys.readouterr().err
    (photo_folder / "odd.pgm").unlink()
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["align", str(photo_folder), str(tmp_path / "x"), "--detect", "--landmarks", "f.txt"])
    with pytest.raises(SystemExit):
        main(["align", str(photo_folder), str(tmp_path / "x")])
    capsys.readouterr()
    assert main(["align", str(photo_folder), str(dst), "--detect", "--overwrite"]) == 0
    assert (dst / "mine.txt").read_text() == "keep me" and (dst / "detection_report.json").is_file()
