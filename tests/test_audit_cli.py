"""``python -m facerec.data audit`` end to end with the smoke model on synthetic faces with planted problems, and
its refusals of bad input before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facerec.data.__main__ import main
from facerec.data.decode import encode_jpeg
from tests.helpers import SHARED_DATA


@pytest.fixture
def planted(synthetic_heldout, tmp_path) -> Path:
    """The held-out synthetic faces (6 identities x 3) with an exact copy of one image in another identity's folder
    and an unreadable file."""
    root = shutil.copytree(synthetic_heldout / "images", tmp_path / "train")
    shutil.copyfile(root / "hid00000" / "hid00000_0001.jpg", root / "hid00001" / "copy.jpg")
    (root / "hid00002" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def files_under(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.slow  # the audit starts python -m facerec.embed (the command's own main runs in this process)
def test_audit_reports_every_kind_and_writes_the_picture(
    planted, smoke_checkpoint, synthetic_heldout, tmp_path, capsys
):
    before = files_under(planted)
    out = tmp_path / "audit"
    assert main([
        "audit", str(planted), "--model", str(smoke_checkpoint), "--out", str(out),
        "--against", str(synthetic_heldout / "pairs.txt"), "--against-images", str(synthetic_heldout / "images"),
        "--device", "cpu", "--workers", "0", "--overlap", "0.99", "--merge", "0.99",
    ]) == 0  # fmt: skip
    stdout = capsys.readouterr().out
    report = json.loads((out / "audit.json").read_text())
    assert [entry["path"] for entry in report["corrupt"]] == ["hid00002/broken.jpg"]
    assert report["exact_duplicates"] == [
        {"paths": ["hid00000/hid00000_0001.jpg", "hid00001/copy.jpg"], "identities": ["hid00000", "hid00001"]}
    ]
    assert report["images"] == 20 and report["identities"] == 6 and report["undetectable"] == []
    # the audited identities are the verification set's people: each one's best match is itself
    best = {}
    for item in report["overlap"]:
        best.setdefault(item["person"], item)
    assert {person: item["identity"] for person, item in best.items()} == {person: person for person in best}
    assert report["counts"]["corrupt"] == 1 and "exact_duplicates | 1" in stdout
    assert (out / "worst.png").stat().st_size > 0 and (out / "embeddings.npz").is_file()
    assert files_under(planted) == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--out", "{root}/hid00000/report"], "inside the audited folder"),
        (["--out", "{full}"], "is not empty"),
        (["--out", "{file}"], "is a file"),
        (["--out", "{new}", "--model", "{missing}"], "model not found"),
        (["--out", "{new}", "--model", "{file}"], "expected a training checkpoint"),
        (["--out", "{new}", "--against-images", "{root}"], "--against-images is an option of --against"),
        (["--out", "{new}", "--against", "{missing}"], "pairs file not found"),
    ],
)
def test_audit_refuses_bad_input_before_any_work(planted, tmp_path, capsys, arguments, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "audit.json").write_text("{}")
    (tmp_path / "model.ckpt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    names = {
        "root": planted,
        "full": tmp_path / "full",
        "file": tmp_path / "notes.txt",
        "new": tmp_path / "new",
        "missing": tmp_path / "missing.ckpt",
    }
    arguments = [argument.format(**names) for argument in arguments]
    model = [] if "--model" in arguments else ["--model", str(tmp_path / "model.ckpt")]
    before = files_under(tmp_path)
    assert main(["audit", str(planted), *model, *arguments]) == 2
    assert message in capsys.readouterr().err
    assert files_under(tmp_path) == before and not (tmp_path / "new").exists()


def test_audit_refuses_a_missing_folder(tmp_path, capsys):
    (tmp_path / "model.ckpt").write_bytes(b"")
    assert main(["audit", str(tmp_path / "nowhere"), "--model", str(tmp_path / "model.ckpt"), "--out", "x"]) == 2
    assert "identity folder not found" in capsys.readouterr().err


@pytest.mark.slow  # the audit starts python -m facerec.embed
def test_a_failed_embedding_passes_its_message_on(planted, tmp_path, capsys):
    (tmp_path / "model.ckpt").write_bytes(b"not a checkpoint")
    assert main(["audit", str(planted), "--model", str(tmp_path / "model.ckpt"), "--out", str(tmp_path / "o")]) == 2
    assert "embedding with python -m facerec.embed failed" in capsys.readouterr().err


FRAMES = SHARED_DATA / "lfw_folds1-5" / "frames"


@pytest.mark.slow  # the audit starts python -m facerec.embed
@pytest.mark.skipif(not FRAMES.is_dir(), reason=f"real LFW frames not found: {FRAMES}")
def test_audit_of_raw_photos_lists_those_without_a_face(smoke_checkpoint, tmp_path):
    root = tmp_path / "photos"
    for person, numbers in (("Abel_Pacheco", (1, 4)), ("Akhmed_Zakayev", (1, 3))):
        (root / person).mkdir(parents=True)
        for number in numbers:
            shutil.copyfile(FRAMES / person / f"{person}_{number:04d}.jpg", root / person / f"{number}.jpg")
    (root / "Akhmed_Zakayev" / "blank.jpg").write_bytes(encode_jpeg(np.full((250, 250, 3), 128, np.uint8)))
    out = tmp_path / "audit"
    arguments = ["audit", str(root), "--model", str(smoke_checkpoint), "--out", str(out), "--detect", "--device", "cpu"]
    assert main(arguments) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["undetectable"] == ["Akhmed_Zakayev/blank.jpg"] and report["corrupt"] == []
    detection = json.loads((out / "detection.json").read_text())
    assert any(problem["path"].endswith("blank.jpg") for problem in detection["problems"])
