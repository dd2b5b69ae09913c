"""eval.py's eval_sets end to end (IJB-C on a mini-IJB in the official layout, 1:N search on identity folders),
and their entries: built from conf/eval_set/, the former syntax refused."""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from facerec.data.__main__ import main as data_main
from facerec.data.align import template
from facerec.data.decode import read_image
from facerec.data.protocols.search import SearchSetError, load_search_set
from facerec.data.training.folder import list_image_files, scan_identity_folder
from facerec.eval.ijb import roc_points, tar_at_far_nearest
from facerec.eval_sets import KINDS, IJBSet, SearchSet, build_eval_set, check_eval_sets
from facerec.run.evaluation import evaluate, evaluation_sets
from tests.helpers import (
    REPO,
    compose_config,
    eval_set_entry,
    evaluate_in_process,
    module_embeddings,
    read_metrics,
)

MARGIN = 8  # pixels of black border around each 32x32 face in the mini-IJB's loose crops


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def write_mini_ijb(root: Path, heldout: Path) -> dict:
    """A mini-IJB-C in the official layout from the held-out faces: 6 subjects, 2 templates each.

    Each loose crop is the 32x32 face on a black (32 + 2 MARGIN)^2 canvas, and its landmarks are the 32x32
    template shifted by MARGIN, so alignment recovers the face exactly. Template 2s+1 of subject s holds its
    first two images as one media and template 2s+2 its third as another; every template pair is scored.
    """
    index = scan_identity_folder(heldout)
    (root / "meta").mkdir(parents=True)
    (root / "loose_crop").mkdir()
    landmarks = template((32, 32)) + MARGIN
    faces, rows, marks = [], [], []
    for subject, files in enumerate(index.images):
        for k, path in enumerate(files):
            name = f"{subject * 10 + k}.png"
            face = read_image(path)
            canvas = np.zeros((32 + 2 * MARGIN, 32 + 2 * MARGIN, 3), np.uint8)
            canvas[MARGIN:-MARGIN, MARGIN:-MARGIN] = face
            cv2.imwrite(str(root / "loose_crop" / name), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
            score = 0.5 + 0.1 * k
            faces.append(face)
            rows.append((name, 2 * subject + 1 + (k == 2), 100 * subject + (k == 2), score))
            marks.append(f"{name} {' '.join(f'{v:.4f}' for v in landmarks.reshape(-1))} {score}")
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("".join(f"{n} {t} {m}\n" for n, t, m, _ in rows))
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(marks) + "\n")
    pairs = [(a, b, int((a - 1) // 2 == (b - 1) // 2)) for a in range(1, 13) for b in range(a + 1, 13)]
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("".join(f"{a} {b} {y}\n" for a, b, y in pairs))
    return {"faces": faces, "rows": rows, "pairs": pairs}


def per_template_scores(features: np.ndarray, rows: list, pairs: list, norm: bool, detector: bool) -> np.ndarray:
    """insightface's pooling written as a plain loop: per template, medias' means summed, normalised; cosines."""
    templates: dict[int, dict[int, list[np.ndarray]]] = {}
    for feature, (_, template_id, media, score) in zip(features, rows, strict=True):
        feature = feature if norm else unit(feature)
        templates.setdefault(template_id, {}).setdefault(media, []).append(feature * score if detector else feature)
    pooled = {t: unit(sum(np.mean(m, axis=0) for m in medias.values())) for t, medias in templates.items()}
    return np.array([pooled[a] @ pooled[b] for a, b, _ in pairs])


def evaluate_config(smoke_checkpoint, data_dir, tmp_path, *overrides):
    return compose_config(
        "data=synthetic_mini", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        f"ckpt_path={smoke_checkpoint}", "data.val_sets=null", *overrides,
        config_name="eval", output_dir=tmp_path / "run", data_dir=data_dir,
    )  # fmt: skip


@pytest.mark.parametrize("norm, detector", [(True, True), (False, False)])
def test_ijbc_equals_an_independent_per_template_loop(
    smoke_checkpoint, synthetic_heldout, data_dir, tmp_path, norm, detector
):
    mini = write_mini_ijb(tmp_path / "IJBC", synthetic_heldout / "images")
    cfg = evaluate_config(
        smoke_checkpoint, data_dir, tmp_path, "+eval_set@eval_sets.ijbc=ijb",
        f"eval_sets.ijbc.root={tmp_path / 'IJBC'}", "eval_sets.ijbc.save_features=true",
        f"eval_sets.ijbc.use_norm_score={norm}", f"eval_sets.ijbc.use_detector_score={detector}",
    )  # fmt: skip
    results = evaluate(cfg)
    run = tmp_path / "run"
    features = np.load(run / "ijbc_features.npy")
    expected_features = module_embeddings(smoke_checkpoint, mini["faces"])
    assert features.shape == (18, 16) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected_features, rtol=1e-4, atol=1e-4 * np.abs(expected_features).max())

    scores = per_template_scores(expected_features, mini["rows"], mini["pairs"], norm, detector)
    labels = np.array([y for _, _, y in mini["pairs"]])
    roc = roc_points(labels, scores)
    expected = tar_at_far_nearest(roc.fpr, roc.tpr)
    assert list(expected) == [f"tar@far=1e-{k}" for k in range(6, 0, -1)]
    written = json.loads((run / "metrics.json").read_text())["ijbc"]
    for key, value in expected.items():
        assert written[key] == pytest.approx(value, abs=1e-12) and results["ijbc"][key] == written[key]
    assert (run / "roc_ijbc.png").stat().st_size > 0


def test_ijb_errors_name_the_problem(smoke_checkpoint, synthetic_heldout, data_dir, tmp_path):
    write_mini_ijb(tmp_path / "IJBC", synthetic_heldout / "images")
    landmarks = tmp_path / "IJBC" / "meta" / "ijbc_name_5pts_score.txt"
    landmarks.write_text("\n".join([*landmarks.read_text().splitlines()[:3], "4.png 1 2 3"]) + "\n")
    cfg = evaluate_config(
        smoke_checkpoint, data_dir, tmp_path, "+eval_set@eval_sets.ijbc=ijb", f"eval_sets.ijbc.root={tmp_path / 'IJBC'}"
    )
    with pytest.raises(ValueError, match=r"ijbc_name_5pts_score.txt:4:"):
        evaluate(cfg)
    cfg = evaluate_config(
        smoke_checkpoint, data_dir, tmp_path, "+eval_set@eval_sets.ijbb=ijb", f"eval_sets.ijbb.root={tmp_path / 'IJBC'}"
    )
    with pytest.raises(FileNotFoundError, match=r"ijbb_face_tid_mid.txt is missing"):
        evaluate(cfg)
    with pytest.raises(ValueError, match=r"eval_sets.x has unknown options \['typo'\]: .*IJBSet takes root, prefix"):
        check_eval_sets({"x": eval_set_entry("ijb", root="r", typo=1)})
    with pytest.raises(FileNotFoundError, match=r"eval_sets.s.probe: folder not found: nowhere"):
        check_eval_sets({"s": eval_set_entry("search", gallery=str(tmp_path), probe="nowhere")})
    write_mini_ijb(tmp_path / "good", synthetic_heldout / "images")
    clash = compose_config(
        "data=synthetic_mini", f"ckpt_path={smoke_checkpoint}", "+eval_set@eval_sets.synthetic=ijb",
        f"eval_sets.synthetic.root={tmp_path / 'good'}",
        config_name="eval", output_dir=tmp_path / "run", data_dir=data_dir,
    )  # fmt: skip
    with pytest.raises(ValueError, match="eval_sets and data.val_sets both name synthetic"):
        evaluate(clash)


@pytest.mark.parametrize(
    ("overrides", "hint"),
    [
        (
            ["+eval_sets.ijbc.root=/d/IJBC", "+eval_sets.ijbc.save_features=true"],
            "+eval_set@eval_sets.ijbc=ijb eval_sets.ijbc.root=/d/IJBC eval_sets.ijbc.save_features=true",
        ),
        (["+eval_sets.s.gallery=/g"], "+eval_set@eval_sets.s=search eval_sets.s.gallery=/g eval_sets.s.probe=DIR"),
        (
            ["+eval_sets.s.typo=1"],
            "+eval_set@eval_sets.s=ijb eval_sets.s.root=DIR or "
            "+eval_set@eval_sets.s=search eval_sets.s.gallery=DIR eval_sets.s.probe=DIR",
        ),
    ],
)
def test_the_former_syntax_is_refused_with_the_command_to_give(data_dir, tmp_path, overrides, hint):
    cfg = evaluate_config("unused.ckpt", data_dir, tmp_path, *overrides)
    with pytest.raises(
        ValueError, match=r"eval_sets.\w+ has no _target_: sets are added from .*conf/eval_set/"
    ) as error:
        evaluation_sets(cfg, [32, 32], None)
    assert str(error.value).endswith(f"; give {hint}")


def test_no_set_configured_gives_the_syntax(data_dir, tmp_path):
    with pytest.raises(
        ValueError, match=re.escape("or +eval_set@eval_sets.search=search eval_sets.search.gallery=DIR")
    ):
        evaluation_sets(evaluate_config("unused.ckpt", data_dir, tmp_path), [32, 32], None)


def test_a_config_group_entry_composes_and_builds(tmp_path):
    cfg = compose_config(
        "+eval_set@eval_sets.ijbc=ijb", f"eval_sets.ijbc.root={tmp_path}", "+eval_set@eval_sets.s=search",
        "eval_sets.s.gallery=G", "eval_sets.s.probe=P", "eval_sets.s.batch_size=8", config_name="eval",
    )  # fmt: skip
    ijbc, search = build_eval_set("ijbc", cfg.eval_sets.ijbc), build_eval_set("s", cfg.eval_sets.s)
    assert type(ijbc) is IJBSet and (ijbc.name, ijbc.root, ijbc.prefix) == ("ijbc", str(tmp_path), None)
    assert (ijbc.use_norm_score, ijbc.use_detector_score, ijbc.save_features) == (True, True, False)
    assert type(search) is SearchSet and (search.name, search.gallery, search.probe) == ("s", "G", "P")
    assert (search.distractors, search.batch_size, search.num_workers) == (None, 8, None)
    assert sorted(path.stem for path in (REPO / "conf" / "eval_set").glob("*.yaml")) == ["ijb", "search"]
    for kind in KINDS:  # every option of the class, with its default (??? when it has none)
        config = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "eval_set" / f"{kind.config_name}.yaml"))
        assert config.pop("_target_") == f"facerec.eval_sets.{kind.__name__}"
        options = inspect.signature(kind).parameters.values()
        assert config == {p.name: "???" if p.default is p.empty else p.default for p in options if p.name != "name"}


def test_unknown_or_missing_options_are_refused_naming_the_set(tmp_path):
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'eval_sets.ijbc.typo'"):
        compose_config("+eval_set@eval_sets.ijbc=ijb", "eval_sets.ijbc.typo=1", config_name="eval")
    with pytest.raises(ConfigCompositionException, match=r"Could not find 'eval_set/ibj'\n\nAvailable options"):
        compose_config("+eval_set@eval_sets.ijbc=ibj", config_name="eval")
    cfg = compose_config(
        "+eval_set@eval_sets.ijbc=ijb", f"eval_sets.ijbc.root={tmp_path}", "+eval_sets.ijbc.typo=1", config_name="eval"
    )
    with pytest.raises(ValueError, match=r"eval_sets.ijbc has unknown options \['typo'\]: facerec.eval_sets.IJBSet "):
        check_eval_sets(cfg.eval_sets)
    cfg = compose_config("+eval_set@eval_sets.s=search", "eval_sets.s.gallery=G", config_name="eval")
    with pytest.raises(ValueError, match=r"eval_sets.s: probe not set \(\?\?\?\): give eval_sets.s.probe=\.\.\.$"):
        check_eval_sets(cfg.eval_sets)
    with pytest.raises(ValueError, match=r"eval_sets.x._target_=builtins.dict is not an evaluation set"):
        check_eval_sets({"x": {"_target_": "builtins.dict"}})


def test_eval_adds_a_set_from_the_config_group(smoke_checkpoint, synthetic_heldout, data_dir, tmp_path):
    data_main(["make-search", str(synthetic_heldout / "images"), str(tmp_path / "s"), "--unenrolled", "0.3"])
    evaluate_in_process(
        "data=synthetic_mini", "trainer.accelerator=cpu", f"ckpt_path={smoke_checkpoint}", "data.val_sets=null",
        "+eval_set@eval_sets.people=search", f"eval_sets.people.gallery={tmp_path / 's' / 'gallery'}",
        f"eval_sets.people.probe={tmp_path / 's' / 'probe'}", output_dir=tmp_path / "run", data_dir=data_dir,
    )  # fmt: skip
    metrics = read_metrics(tmp_path / "run" / "metrics.json")
    assert list(metrics) == ["people"] and set(SearchSet.columns) <= set(metrics["people"])


def test_make_search_splits_identities_into_gallery_and_probes(synthetic_heldout, tmp_path, capsys):
    assert (
        data_main(["make-search", str(synthetic_heldout / "images"), str(tmp_path / "s"), "--unenrolled", "0.3"]) == 0
    )
    assert "identities not in the gallery" in capsys.readouterr().out
    gallery, probe = scan_identity_folder(tmp_path / "s" / "gallery"), scan_identity_folder(tmp_path / "s" / "probe")
    assert [len(files) for files in gallery.images] == [1] * 4  # 6 identities, round(0.3 * 6) = 2 left out
    assert len(probe.class_names) == 6 and sum(map(len, probe.images)) == 18 - 4
    assert set(gallery.class_names) < set(probe.class_names)
    every = sorted(path.name for path in list_image_files(tmp_path / "s"))
    assert every == sorted(path.name for path in list_image_files(synthetic_heldout / "images"))
    assert data_main(["make-search", str(synthetic_heldout / "images"), str(tmp_path / "s")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_search_equals_a_hand_loop_with_distractors(smoke_checkpoint, synthetic_heldout, data_dir, tmp_path):
    data_main(["make-search", str(synthetic_heldout / "images"), str(tmp_path / "s"), "--unenrolled", "0.3"])
    distractors = shutil.copytree(data_dir / "synthetic_mini" / "train", tmp_path / "distractors")
    cfg = evaluate_config(
        smoke_checkpoint, data_dir, tmp_path, "+eval_set@eval_sets.search=search",
        f"eval_sets.search.gallery={tmp_path / 's' / 'gallery'}", f"eval_sets.search.probe={tmp_path / 's' / 'probe'}",
        f"eval_sets.search.distractors={distractors}",
    )  # fmt: skip
    results = evaluate(cfg)["search"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["search"] == results

    def embed(paths):
        return unit(module_embeddings(smoke_checkpoint, [read_image(path) for path in paths]))

    gallery, probe = scan_identity_folder(tmp_path / "s" / "gallery"), scan_identity_folder(tmp_path / "s" / "probe")
    entries = [unit(embed(files).mean(axis=0)) for files in gallery.images] + list(embed(list_image_files(distractors)))
    names = list(gallery.class_names) + [None] * (len(entries) - len(gallery.class_names))
    ranks, mated_scores, non_mated_tops = [], [], []
    for name, files in zip(probe.class_names, probe.images, strict=True):
        for feature in embed(files):
            scores = np.array([entry @ feature for entry in entries])
            if name in names:
                true = scores[names.index(name)]
                ranks.append(1 + sum(s >= true for k, s in enumerate(scores) if k != names.index(name)))
                mated_scores.append(true)
            else:
                non_mated_tops.append(scores.max())
    ranks = np.array(ranks)
    assert results["rank-1"] == pytest.approx(np.mean(ranks == 1))
    assert results["rank-5"] == pytest.approx(np.mean(ranks <= 5))
    # 6 non-mated probes: FPIR <= 0.1 allows floor(0.6) = 0 false positives, so the threshold is the highest
    # non-mated score, and a mated probe counts if it is at rank 1 with a higher score.
    tau = max(non_mated_tops)
    detected = np.mean([rank == 1 and score > tau for rank, score in zip(ranks, mated_scores, strict=True)])
    assert results["dir@fpir=1e-1"] == pytest.approx(detected) and results["dir@fpir=1e-2"] == pytest.approx(detected)


def image_tree(root: Path, files: list[str]) -> Path:
    """Empty ``.jpg`` files at ``files`` under ``root`` (folder scans go by name; nothing is decoded)."""
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_search_folders_that_overlap_are_refused_before_embedding(tmp_path, caplog):
    gallery = image_tree(tmp_path / "g", ["a/1.jpg", "b/1.jpg"])
    probe = image_tree(tmp_path / "p", ["a/2.jpg", "c/3.jpg"])
    distractors = image_tree(tmp_path / "d", ["x/1.jpg"])
    (tmp_path / "link").symlink_to(gallery, target_is_directory=True)
    for folders, message in [
        ((gallery, gallery), r"the gallery folder .*/g and the probe folder .*/g are one folder"),
        ((gallery, probe, gallery), r"the gallery folder .*/g and the distractor folder .*/g are one folder"),
        ((gallery, probe, probe), r"the probe folder .*/p and the distractor folder .*/p are one folder"),
        ((gallery, tmp_path / "link"), r"the gallery folder .*/g and the probe folder .*/link are one folder"),
        ((gallery, probe, probe / "c"), r"the probe folder .*/p and the distractor folder .*/p/c are nested"),
    ]:
        with pytest.raises(SearchSetError, match=message):
            load_search_set(*folders)
        with pytest.raises(SearchSetError, match=message):  # eval.py reads every set before embedding any
            options = dict(zip(["gallery", "probe", "distractors"], map(str, folders), strict=False))
            check_eval_sets({"s": eval_set_entry("search", **options)})
    (probe / "b").mkdir()
    (probe / "b" / "same.jpg").symlink_to(gallery / "b" / "1.jpg")
    with pytest.raises(
        SearchSetError, match=r"p/b/same.jpg \(in the probe folder .*\) and .*g/b/1.jpg .* one file \(a link\)"
    ):
        load_search_set(gallery, probe, distractors)
    (probe / "b" / "same.jpg").unlink()
    (distractors / "hard.jpg").hardlink_to(gallery / "a" / "1.jpg")
    with pytest.raises(SearchSetError, match=r"d/hard.jpg \(in the distractor folder .*\) and .*g/a/1.jpg"):
        load_search_set(gallery, probe, distractors)
    (distractors / "hard.jpg").unlink()
    image_tree(distractors, ["a/9.jpg"])
    assert len(load_search_set(gallery, probe, distractors).distractor_images) == 2
    assert "has sub-folders named as gallery identities (a): distractors count as nobody" in caplog.text
