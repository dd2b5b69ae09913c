"""5-landmark alignment: the template, the similarity estimate, the warp, landmark files and ``align``."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.data.__main__ import main
from facerec.data.align import (
    ARCFACE_TEMPLATE,
    LandmarkRow,
    align_face,
    align_folder,
    landmark_problem,
    parse_landmark_line,
    read_landmarks,
    similarity_transform,
    template,
)
from facerec.data.decode import encode_jpeg, read_image
from facerec.data.text import TextFileError

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)], dtype=np.float64)
"""One colour per landmark blob (RGB): left eye, right eye, nose, left and right mouth corner."""


def similarity(angle_degrees: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """The (2, 3) matrix of a rotation by ``angle_degrees``, a uniform ``scale`` and a translation."""
    cos, sin = math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))
    return np.array([[scale * cos, -scale * sin, shift[0]], [scale * sin, scale * cos, shift[1]]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def blob_face(points: np.ndarray, size: tuple[int, int] = (112, 112), sigma: float = 2.0) -> np.ndarray:
    """A black (H, W, 3) uint8 canvas with a Gaussian blob of colour COLOURS[i] centred (sub-pixel) at points[i]."""
    ys, xs = np.mgrid[: size[0], : size[1]].astype(np.float64)
    canvas = np.zeros((*size, 3))
    for (x, y), colour in zip(points, COLOURS, strict=True):
        canvas += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))[..., None] * colour
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def blob_centres(image: np.ndarray) -> np.ndarray:
    """The (5, 2) intensity-weighted centroids (x, y) of the pixels whose colour is each of COLOURS.

    The blobs lie on black and are far apart, so resampling only scales a pixel's colour: a pixel
    belongs to the blob whose colour direction it has.
    """
    pixels = image.reshape(-1, 3).astype(np.float64)
    ys, xs = np.divmod(np.arange(len(pixels)), image.shape[1])
    directions = COLOURS / np.linalg.norm(COLOURS, axis=1, keepdims=True)
    norms = np.linalg.norm(pixels, axis=1)
    cosines = pixels @ directions.T / np.maximum(norms, 1e-9)[:, None]
    owner = np.argmax(cosines, axis=1)
    centres = []
    for index in range(len(COLOURS)):
        weight = np.where((owner == index) & (cosines[:, index] > 0.98) & (norms > 8), norms, 0.0)
        assert weight.sum() > 0, f"blob {index} not found"
        centres.append([(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()])
    return np.array(centres)


def photo_of_face(matrix: np.ndarray, photo_size: tuple[int, int] = (320, 400)) -> tuple[np.ndarray, np.ndarray]:
    """The 112x112 blob face warped by ``matrix`` into a bigger (H, W) photo, and its landmarks there."""
    face = blob_face(ARCFACE_TEMPLATE)
    photo = cv2.warpAffine(face, matrix, (photo_size[1], photo_size[0]), flags=cv2.INTER_CUBIC, borderValue=0.0)
    return photo, apply(matrix, ARCFACE_TEMPLATE)


@pytest.mark.parametrize("size", [(112, 112), (112, 96), (128, 128)])
@pytest.mark.parametrize(
    ("angle", "scale", "shift"), [(20.0, 1.7, (150.3, 40.6)), (-160.0, 1.3, (260.2, 250.7))], ids=["20deg", "-160deg"]
)
def test_align_face_puts_the_landmarks_on_the_template(size, angle, scale, shift):
    photo, landmarks = photo_of_face(similarity(angle, scale, shift))
    assert np.abs(blob_centres(photo) - landmarks).max() < 0.5  # the photo is what the test claims
    crop = align_face(photo, landmarks, size)
    assert crop.shape == (*size, 3) and crop.dtype == np.uint8
    assert np.abs(blob_centres(crop) - template(size)).max() < 0.5


def test_align_face_of_an_aligned_face_is_the_identity():
    face = blob_face(ARCFACE_TEMPLATE)
    assert np.array_equal(align_face(face, ARCFACE_TEMPLATE), face)


def test_align_face_rejects_bad_input():
    face = blob_face(ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        align_face(face[..., 0], ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        align_face(face.astype(np.float32), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match=r"5 \(x, y\) points"):
        align_face(face, ARCFACE_TEMPLATE[:4])
    with pytest.raises(ValueError, match="non-finite"):
        align_face(face, np.where(ARCFACE_TEMPLATE > 90, np.nan, ARCFACE_TEMPLATE))
    with pytest.raises(ValueError, match="positive integers"):
        align_face(face, ARCFACE_TEMPLATE, (0, 112))


def test_template_sizes():
    assert np.array_equal(template((112, 112)), ARCFACE_TEMPLATE)
    narrow = template((112, 96))
    assert np.array_equal(narrow, ARCFACE_TEMPLATE - [8, 0])
    np.testing.assert_allclose(template((128, 128)), ARCFACE_TEMPLATE * 128 / 112, rtol=0, atol=1e-12)
    wide = template((224, 256))  # scale by H / 112 = 2, then centre: x + (256 - 224) / 2
    np.testing.assert_allclose(wide, ARCFACE_TEMPLATE * 2 + [16, 0], rtol=0, atol=1e-12)
    template((112, 112))[0, 0] = 0  # a copy: the constant stays as it is
    assert ARCFACE_TEMPLATE[0, 0] == 38.2946
    for bad in [(0, 112), (112, -1), (112,), (112.0, 112), (True, 112)]:
        with pytest.raises(ValueError, match="two positive integers"):
            template(bad)


def lstsq_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """An independent least-squares solve for M = [[a, -b, tx], [b, a, ty]].

    Each pair gives two linear equations in (a, b, tx, ty): x' = a x - b y + tx and y' = b x + a y + ty.
    """
    ones, zeros = np.ones(len(src)), np.zeros(len(src))
    rows_x = np.stack([src[:, 0], -src[:, 1], ones, zeros], axis=1)
    rows_y = np.stack([src[:, 1], src[:, 0], zeros, ones], axis=1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.concatenate([rows_x, rows_y]), np.concatenate(dst.T), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


@pytest.mark.parametrize(("angle", "scale"), [(0.0, 1.0), (20.0, 1.7), (-135.0, 0.4), (180.0, 2.5)])
def test_similarity_transform_recovers_a_known_similarity(angle, scale):
    matrix = similarity(angle, scale, (-12.5, 33.25))
    src = np.random.default_rng(0).uniform(0, 200, (5, 2))
    np.testing.assert_allclose(similarity_transform(src, apply(matrix, src)), matrix, rtol=0, atol=1e-9)


def test_similarity_transform_of_two_points_is_exact():
    matrix = similarity(75.0, 0.8, (3.0, -4.0))
    src = np.array([[10.0, 20.0], [30.0, 25.0]])
    np.testing.assert_allclose(similarity_transform(src, apply(matrix, src)), matrix, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_similarity_transform_is_the_least_squares_solution_on_noisy_points(seed):
    rng = np.random.default_rng(seed)
    src = ARCFACE_TEMPLATE * rng.uniform(0.5, 3) + rng.uniform(0, 300, 2) + rng.normal(0, 4, (5, 2))
    dst = apply(similarity(rng.uniform(-180, 180), 0.7, (5, 9)), src) + rng.normal(0, 3, (5, 2))
    np.testing.assert_allclose(similarity_transform(src, dst), lstsq_similarity(src, dst), rtol=0, atol=1e-9)
    # the landmarks of a real face, noisy, onto the template: what align_face solves
    np.testing.assert_allclose(
        similarity_transform(src, ARCFACE_TEMPLATE), lstsq_similarity(src, ARCFACE_TEMPLATE), rtol=0, atol=1e-9
    )


def test_similarity_transform_never_reflects():
    mirrored = ARCFACE_TEMPLATE * [-1, 1]  # a mirror image: the best similarity is not the reflection
    matrix = similarity_transform(ARCFACE_TEMPLATE, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0
    np.testing.assert_allclose(matrix, lstsq_similarity(ARCFACE_TEMPLATE, mirrored), rtol=0, atol=1e-9)


def test_similarity_transform_errors():
    points = ARCFACE_TEMPLATE
    with pytest.raises(ValueError, match="same shape"):
        similarity_transform(points, points[:4])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        similarity_transform(points.ravel(), points.ravel())
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        similarity_transform(np.ones((5, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        similarity_transform(points[:1], points[:1])
    with pytest.raises(ValueError, match="non-finite"):
        similarity_transform(np.where(points > 90, np.inf, points), points)
    with pytest.raises(ValueError, match="all equal"):
        similarity_transform(np.full((5, 2), 7.0), points)


IJB_LINE = "1.jpg 96.5 117.3 140.1 115.9 118.2 140.4 100.7 163.0 136.0 162.2 0.99923"
FACE = "38 52 74 52 56 72 42 92 71 92"


def test_parse_landmark_line_with_and_without_score():
    row = parse_landmark_line(IJB_LINE, "x")
    assert isinstance(row, LandmarkRow) and row.path == "1.jpg" and row.score == pytest.approx(0.99923)
    assert row.landmarks.dtype == np.float64 and row.landmarks.tolist()[0] == [96.5, 117.3]
    assert row.landmarks.tolist()[4] == [136.0, 162.2]
    row = parse_landmark_line("a/b.png\t1 2\t3 4 5 6 7 8 9 10\n", "x")
    assert row.path == "a/b.png" and row.score is None
    assert row.landmarks.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]


def test_read_landmarks_spaces_tabs_and_blank_lines(tmp_path):
    file = tmp_path / "landmarks.txt"
    face = FACE.replace(" ", "\t")
    file.write_text(f"{IJB_LINE}\n\n  \t\nsub/2.jpg\t{face}\n3.png  38 52  {FACE[6:]} 0.5\n")
    rows = read_landmarks(file)
    assert [row.path for row in rows] == ["1.jpg", "sub/2.jpg", "3.png"]
    assert [row.score for row in rows] == [pytest.approx(0.99923), None, 0.5]
    assert rows[1].landmarks.shape == (5, 2) and rows[2].landmarks.tolist() == rows[1].landmarks.tolist()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "x.jpg 1 2 3 4 5 6 7 8 9",
            r":3: expected a path, 10 coordinates and an optional score \(11 or 12 fields\), got 10",
        ),
        ("x.jpg 1 2 3 4 5 6 7 8 9 10 11 12", r":3: .*got 13"),
        ("x.jpg 1 2 abc 4 5 6 7 8 9 10", r":3: field 4 is not a number: 'abc'"),
        ("x.jpg 1 2 3 4 5 6 7 8 9 nan", r":3: field 11 is not a finite number: 'nan'"),
        ("x.jpg 1 2 3 4 5 6 7 8 9 10 inf", r":3: field 12 is not a finite number: 'inf'"),
    ],
)
def test_read_landmarks_bad_rows_name_file_and_line(tmp_path, bad, message):
    file = tmp_path / "landmarks.txt"
    file.write_text(f"{IJB_LINE}\n\n{bad}\n{IJB_LINE}\n")
    with pytest.raises(ValueError, match=f"landmarks.txt{message}"):
        read_landmarks(file)


def face_folder(root: Path) -> tuple[Path, Path]:
    """Two photos (a JPEG and a nested PNG) of the blob face and the landmark file listing them."""
    lines = []
    for name, matrix in [("a.jpg", similarity(20, 1.7, (150, 40))), ("x/y/b.png", similarity(-30, 1.2, (80, 150)))]:
        photo, landmarks = photo_of_face(matrix)
        (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        _, data = cv2.imencode(Path(name).suffix, cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
        (root / "src" / name).write_bytes(encode_jpeg(photo, 98) if name.endswith(".jpg") else data.tobytes())
        lines.append(" ".join([name, *(f"{value:.4f}" for value in landmarks.ravel()), "0.99"]))
    (root / "landmarks.txt").write_text("\n".join(lines) + "\n")
    return root / "src", root / "landmarks.txt"


def files_under(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def test_align_cli_writes_crops_at_the_same_relative_paths(tmp_path, capsys):
    src, landmarks = face_folder(tmp_path)
    out = tmp_path / "out"
    assert main(["align", str(src), str(out), "--landmarks", str(landmarks), "--size", "112", "96"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 2 aligned 112x96 crops under {out}"
    assert files_under(out) == ["a.jpg", "x/y/b.png"]
    png = read_image(out / "x" / "y" / "b.png")
    assert png.shape == (112, 96, 3) and np.abs(blob_centres(png) - template((112, 96))).max() < 0.5
    assert (out / "a.jpg").read_bytes().startswith(b"\xff\xd8\xff")
    assert np.abs(blob_centres(read_image(out / "a.jpg")) - template((112, 96))).max() < 0.5
    assert main(["align", str(src), str(out), "--landmarks", str(landmarks)]) == 0  # default size, replaces
    assert read_image(out / "a.jpg").shape == (112, 112, 3) and files_under(out) == ["a.jpg", "x/y/b.png"]


def test_align_folder_returns_the_count(tmp_path):
    src, landmarks = face_folder(tmp_path)
    assert align_folder(src, tmp_path / "out", landmarks, (128, 128)) == 2
    assert read_image(tmp_path / "out" / "x" / "y" / "b.png").shape == (128, 128, 3)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a.jpg 1 2 3", r"landmarks.txt:3: expected a path"),
        ("missing.jpg 1 2 3 4 5 6 7 8 9 10", r"landmarks.txt:3: image not found: .*src/missing.jpg"),
        ("../a.jpg 1 2 3 4 5 6 7 8 9 10", r"landmarks.txt:3: image path '../a.jpg' must be relative .* '..'"),
        ("x/../../a.jpg 1 2 3 4 5 6 7 8 9 10", r":3: .*without '..'"),
        ("/etc/a.jpg 1 2 3 4 5 6 7 8 9 10", r":3: image path '/etc/a.jpg' must be relative"),
        ("a.jpg 1 2 3 4 5 6 7 8 9 10", r":3: image a.jpg is already listed on line 1"),
        ("a.gif 1 2 3 4 5 6 7 8 9 10", r":3: cannot write a.gif: the extension must be one of"),
    ],
)
def test_align_cli_bad_landmark_file_writes_nothing(tmp_path, capsys, line, message):
    src, landmarks = face_folder(tmp_path)
    landmarks.write_text(landmarks.read_text() + line + "\n")
    assert main(["align", str(src), str(tmp_path / "out"), "--landmarks", str(landmarks)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and re.search(message, error), error
    assert not (tmp_path / "out").exists()


def test_align_refuses_to_write_into_the_image_folder(tmp_path, capsys):
    src, landmarks = face_folder(tmp_path)
    before = {name: (src / name).read_bytes() for name in files_under(src)}
    assert main(["align", str(src), str(src / "x" / ".."), "--landmarks", str(landmarks)]) == 2
    assert "the output folder must differ from the image folder" in capsys.readouterr().err
    assert {name: (src / name).read_bytes() for name in files_under(src)} == before


def test_align_cli_corrupt_image_is_named(tmp_path, capsys):
    src, landmarks = face_folder(tmp_path)
    (src / "x" / "y" / "b.png").write_bytes(b"not a png")
    assert main(["align", str(src), str(tmp_path / "out"), "--landmarks", str(landmarks)]) == 2
    assert re.search(r"error: cannot decode image .*src/x/y/b.png", capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # image sizes are read before any crop is written


@pytest.mark.parametrize(
    ("make_dst", "message"),
    [
        (lambda src: src / "crops", r"output folder .*/src/crops is inside the image folder"),
        (lambda src: src.parent, r"image folder .*/src is inside the output folder"),
        (lambda src: src.parent / "link" / "x", r"output folder .*/link/x is inside the image folder"),
    ],
    ids=["dst-in-src", "src-in-dst", "dst-in-src-by-symlink"],
)
def test_align_refuses_an_output_folder_inside_or_around_the_images(tmp_path, capsys, make_dst, message):
    src, landmarks = face_folder(tmp_path)
    (tmp_path / "link").symlink_to(src, target_is_directory=True)
    before = files_under(tmp_path)
    assert main(["align", str(src), str(make_dst(src)), "--landmarks", str(landmarks)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert files_under(tmp_path) == before


def test_align_refuses_symbolic_links_between_images_and_crops(tmp_path, capsys):
    src, landmarks = face_folder(tmp_path)
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    (out / "x" / "y").symlink_to(src / "x" / "y", target_is_directory=True)  # crops of x/y/ would land in src
    before = {name: (tmp_path / name).read_bytes() for name in files_under(tmp_path)}
    assert main(["align", str(src), str(out), "--landmarks", str(landmarks)]) == 2
    assert re.search(
        r"landmarks.txt:2: the crop .*out/x/y/b.png would be written to .*src/x/y/b.png", capsys.readouterr().err
    )
    assert {name: (tmp_path / name).read_bytes() for name in files_under(tmp_path)} == before
    (out / "x" / "y").unlink()
    (out / "a.jpg").write_bytes((src / "a.jpg").read_bytes())
    (src / "a.jpg").unlink()
    (src / "a.jpg").symlink_to(out / "a.jpg")  # a listed image that lives in the output folder
    assert main(["align", str(src), str(out), "--landmarks", str(landmarks)]) == 2
    assert re.search(
        r"landmarks.txt:1: image .*src/a.jpg is .*out/a.jpg, inside the output folder", capsys.readouterr().err
    )
    assert files_under(out) == ["a.jpg"] and (out / "a.jpg").read_bytes() == before["src/a.jpg"]


@pytest.mark.parametrize(
    ("landmarks", "message"),
    [
        ("1e300 1 2 3 4 5 6 7 8 9", r"coordinates must be finite numbers within \+-1e\+06 pixels"),
        ("700 50 740 50 720 70 705 90 735 90", r"a point lies off the image by more than half the image's size"),
        ("50 50 50 50 50 50 50 50 50.5 50", r"the 5 points coincide"),
        ("10 10 20 20 30 30 40 40 50 50", r"the 5 points lie on one line"),
    ],
    ids=["huge", "off-image", "coincident", "collinear"],
)
def test_align_checks_every_landmark_before_writing(tmp_path, capsys, landmarks, message):
    src, landmark_file = face_folder(tmp_path)
    first = landmark_file.read_text().splitlines()[0]
    landmark_file.write_text(f"{first}\nx/y/b.png {landmarks} 0.9\n")
    assert main(["align", str(src), str(tmp_path / "out"), "--landmarks", str(landmark_file)]) == 2
    assert re.search(
        rf"error: .*landmarks.txt:2: landmarks of x/y/b.png cannot be aligned: {message}", capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"landmarks.txt is empty: expected lines 'path x1 y1"),
        (b"\n \t\n", r"landmarks.txt is empty"),
        (
            b"a.jpg 1 2 3 4 5 6 7 8 9 10\n\xe9.jpg 1 2 3 4 5 6 7 8 9 10\n",
            r"landmarks.txt:2: byte 0xe9 at offset \d+ is not UTF-8; save the file as UTF-8",
        ),
    ],
    ids=["empty", "blank", "latin-1"],
)
def test_align_refuses_an_empty_or_undecodable_landmark_file(tmp_path, capsys, content, message):
    src, landmark_file = face_folder(tmp_path)
    landmark_file.write_bytes(content)
    assert main(["align", str(src), str(tmp_path / "out"), "--landmarks", str(landmark_file)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_read_landmarks_accepts_a_byte_order_mark_and_refuses_a_folder(tmp_path):
    file = tmp_path / "landmarks.txt"
    file.write_bytes(b"\xef\xbb\xbf" + f"{IJB_LINE}\n".encode())
    assert [row.path for row in read_landmarks(file)] == ["1.jpg"]
    with pytest.raises(TextFileError, match=r"is not a regular file \(a folder\?\): expected a text file of lines"):
        read_landmarks(tmp_path)


def test_align_cli_missing_inputs_and_bad_size(tmp_path, capsys):
    src, landmarks = face_folder(tmp_path)
    assert main(["align", str(src), str(tmp_path / "out"), "--landmarks", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err
    assert main(["align", str(tmp_path / "nope"), str(tmp_path / "out"), "--landmarks", str(landmarks)]) == 2
    assert "image folder not found" in capsys.readouterr().err
    assert main(["align", str(src), str(tmp_path / "out"), "--landmarks", str(landmarks), "--size", "0", "112"]) == 2
    assert "two positive integers" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_landmark_problem_finds_the_first_bad_set_and_why():
    faces = np.stack([ARCFACE_TEMPLATE * 2 + 10] * 4)
    assert landmark_problem(faces) is None and landmark_problem(faces, np.array([[300, 300]] * 4)) is None
    # Points uncorrelated with the template (its centred columns and the ones are orthogonal to them): spread and
    # not on one line, but the least-squares similarity onto the template has scale 0.
    basis = np.linalg.svd(np.column_stack([np.ones(5), ARCFACE_TEMPLATE]).T)[2][3:]
    faces[2] = 50 + 40 * basis.T
    assert landmark_problem(faces) == (
        2,
        f"the similarity onto the ArcFace template has no positive scale (not a face's layout): {faces[2].tolist()}",
    )
    faces[1, 3] = np.inf
    assert landmark_problem(faces)[0] == 1 and landmark_problem(faces)[1].startswith("coordinates must be finite")
