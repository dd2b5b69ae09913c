"""Raw photos at inference and evaluation: ``FaceEmbedder.embed_photos``, ``python -m facerec.embed --detect`` and
``data.val_sets.<name>.detect=true``, on real LFW frames (skipped without them) and a blank photo.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import facerec
from facerec.data.decode import encode_jpeg, read_image
from facerec.data.detection.mtcnn import FaceDetector
from facerec.data.detection.photos import align_photos
from facerec.data.verification.sets import load_pairs_set
from facerec.embed import main as embed_main
from facerec.embed import read_embeddings
from facerec.run.evaluation import evaluate
from tests.helpers import SHARED_DATA, compose_config

FRAMES = SHARED_DATA / "lfw_folds1-5" / "frames"
pytestmark = pytest.mark.skipif(not FRAMES.is_dir(), reason=f"real LFW frames not found: {FRAMES}")
PHOTOS = [("Abel_Pacheco", 1), ("Abel_Pacheco", 4), ("Akhmed_Zakayev", 1), ("Akhmed_Zakayev", 3)]
PHOTOS += [("Adrien_Brody", 1), ("Adrien_Brody", 2), ("Abdullah_Gul", 1), ("Abdullah_Gul", 6)]
BLANK = np.full((250, 250, 3), 128, np.uint8)
PAIRS = """2\t2
Abel_Pacheco\t1\t4
Akhmed_Zakayev\t1\t3
Abel_Pacheco\t1\tAdrien_Brody\t1
Akhmed_Zakayev\t1\tAbdullah_Gul\t1
Adrien_Brody\t1\t2
Abdullah_Gul\t1\t6
Adrien_Brody\t2\tNobody\t1
Abdullah_Gul\t6\tAbel_Pacheco\t4
"""
"""Two folds of 2 same + 2 different pairs over the frames and the blank photo."""


@pytest.fixture
def raw_photos(tmp_path) -> Path:
    """LFW-named identity folders: the frames of PHOTOS and ``Nobody/Nobody_0001.jpg``, a blank photo."""
    root = tmp_path / "photos"
    for name, number in PHOTOS:
        (root / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(FRAMES / name / f"{name}_{number:04d}.jpg", root / name)
    (root / "Nobody").mkdir()
    (root / "Nobody" / "Nobody_0001.jpg").write_bytes(encode_jpeg(BLANK))
    (tmp_path / "pairs.txt").write_text(PAIRS)
    return root


def test_embed_photos_aligns_each_kept_face_and_gives_nan_where_none_was_kept(smoke_checkpoint, raw_photos):
    model = facerec.load_model(smoke_checkpoint, device="cpu")
    photos = [read_image(raw_photos / name / f"{name}_{number:04d}.jpg") for name, number in PHOTOS[4:7]] + [BLANK]
    result = model.embed_photos(photos, batch_size=2)
    assert result.found.tolist() == [True, True, True, False]
    assert [choice.outcome for choice in result.choices] == ["one_face", "several_faces", "one_face", "no_face"]
    assert result.embeddings.dtype == np.float32 and np.isnan(result.embeddings[3]).all()
    np.testing.assert_allclose(np.linalg.norm(result.embeddings[:3], axis=1), 1, atol=1e-5)
    crops = [photo.crop for photo in align_photos(photos[:3], FaceDetector())]
    np.testing.assert_allclose(result.embeddings[:3], model.embed_images(crops), atol=1e-5)
    nothing = model.embed_photos([BLANK])
    assert nothing.embeddings.shape == (1, 16) and np.isnan(nothing.embeddings).all() and not nothing.found.any()


def test_embed_cli_detect_writes_the_photos_with_a_face_and_reports_the_others(
    smoke_checkpoint, raw_photos, tmp_path, capsys
):
    out = tmp_path / "embeddings.npz"
    assert embed_main([str(smoke_checkpoint), str(raw_photos), "--out", str(out), "--detect", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "no_face" in printed and "1 photos without a kept face are left out" in printed
    names, embeddings = read_embeddings(out)
    expected = sorted(f"{name}/{name}_{number:04d}.jpg" for name, number in PHOTOS)
    assert names == expected and embeddings.shape == (8, 16)
    model = facerec.load_model(smoke_checkpoint, device="cpu")
    np.testing.assert_allclose(
        embeddings, model.embed_photos([read_image(raw_photos / name) for name in names]).embeddings, atol=1e-5
    )
    report = json.loads(out.with_suffix(".detection.json").read_text())
    assert report["counts"]["no_face"] == 1 and report["counts"]["several_faces"] == 2 and report["kept"] == 8
    assert {problem["path"] for problem in report["problems"]} == {
        "Nobody/Nobody_0001.jpg", "Adrien_Brody/Adrien_Brody_0002.jpg", "Abdullah_Gul/Abdullah_Gul_0006.jpg"
    }  # fmt: skip

    # Outputs and options are checked before any photo is read.
    base = [str(smoke_checkpoint), str(raw_photos), "--out"]
    out.unlink()
    for args, message in [
        ([str(out), "--detect"], "embeddings.detection.json exists: pass --overwrite"),
        ([str(tmp_path / "a.npz"), "--report", str(tmp_path / "r.json")], "--report and --min-score are options"),
        ([str(tmp_path / "a.npz"), "--detect", "--report", str(tmp_path / "a.npz")], "both name"),
    ]:
        assert embed_main(base + args) == 2
        assert message in capsys.readouterr().err
    (raw_photos / "Adrien_Brody").rename(tmp_path / "elsewhere")
    for folder in raw_photos.iterdir():
        if folder.name != "Nobody":
            shutil.rmtree(folder)
    assert embed_main([*base, str(tmp_path / "none.npz"), "--detect"]) == 2
    assert "no face kept in any of the 1 photos" in capsys.readouterr().err
    assert not (tmp_path / "none.npz").exists() and (tmp_path / "none.detection.json").is_file()


def test_a_pairs_set_of_raw_photos_is_aligned_on_the_fly_and_evaluated(
    smoke_checkpoint, raw_photos, data_dir, tmp_path, caplog
):
    pairs = tmp_path / "pairs.txt"
    with caplog.at_level(logging.WARNING, logger="facerec.data.verification.sets"):
        aligned = load_pairs_set("raw", pairs, raw_photos, detect=True)
    assert "no face scoring at least the minimum in 1 of 9 photos" in caplog.text and "Nobody_0001.jpg" in caplog.text
    plain = load_pairs_set("raw", pairs, raw_photos)
    nobody = [index for index, path in enumerate(plain.images) if path.name == "Nobody_0001.jpg"]
    for index, image in enumerate(aligned.images):
        assert image.shape == ((250, 250, 3) if index in nobody else (112, 112, 3))
    np.testing.assert_array_equal(aligned.pairs, plain.pairs)
    assert aligned.folds == 2
    with pytest.raises(ValueError, match="detect must be true or false"):
        load_pairs_set("raw", pairs, raw_photos, detect="yes")

    cfg = compose_config(
        "data=synthetic_mini", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        f"ckpt_path={smoke_checkpoint}", f"+data.val_sets.raw.pairs={pairs}", f"+data.val_sets.raw.images={raw_photos}",
        "+data.val_sets.raw.detect=true", config_name="eval", output_dir=tmp_path / "run", data_dir=data_dir,
    )  # fmt: skip
    results = evaluate(cfg)
    assert 0 <= results["raw"]["accuracy"] <= 1 and 0 <= results["raw"]["auc"] <= 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["raw"]["accuracy"] == results["raw"]["accuracy"]
