"""Every tool checks its options and outputs before the work: embed, eval.py's metrics_file and ONNX export, and the
impostor pairs a threshold at FAR x needs."""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest

import facerec.embed
from facerec.embed import main as embed_main
from facerec.embed import read_embeddings
from facerec.run.evaluation import evaluate
from facerec.run.tables import format_table
from facerec.run.training import train
from tests.helpers import compose_config, write_image

NEVER_READ = "ckpt_path=never_read.ckpt"  # an option error must come before the checkpoint is even opened


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("run")
    train(compose_config("experiment=smoke", "trainer.max_epochs=1", output_dir=run, data_dir=data_dir))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture
def no_embedding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(facerec.embed, "load_model", refuse)


def test_embed_checks_its_output_before_embedding(tmp_path, no_embedding, capsys):
    images = tmp_path / "images"
    write_image(images / "a.jpg")
    (tmp_path / "dir.npz").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "old.npz").write_bytes(b"keep")
    for out, message in (
        ("dir.npz", "is a directory: name a file"),
        ("file/e.npz", "its folder .*file cannot be created or written"),
        ("old.npz", "old.npz exists: pass --overwrite to replace it"),
    ):
        assert embed_main(["model.ckpt", str(images), "--out", str(tmp_path / out)]) == 2
        assert re.search(message, capsys.readouterr().err), out
    assert (tmp_path / "old.npz").read_bytes() == b"keep"


def test_embed_overwrites_with_overwrite(tmp_path, monkeypatch):
    images = tmp_path / "images"
    write_image(images / "a.jpg")
    (tmp_path / "old.npz").write_bytes(b"old")
    monkeypatch.setattr(facerec.embed, "load_model", lambda *args, **kwargs: SimpleNamespace(transform=None))
    monkeypatch.setattr(facerec.embed, "embed_dataset", lambda *args: np.ones((1, 4), np.float32))
    assert embed_main(["model.ckpt", str(images), "--out", str(tmp_path / "old.npz"), "--overwrite"]) == 0
    assert read_embeddings(tmp_path / "old.npz")[0] == ["a.jpg"]


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["+threshold_at_far=abc"], ValueError, r"threshold_at_far='abc': expected a false accept rate in \(0, 1\)"),
        (["+threshold_at_far=1.5"], ValueError, r"threshold_at_far=1.5: expected a false accept rate"),
        (["+threshold_at_far=nan"], ValueError, r"threshold_at_far=nan: expected"),
        (["+threshold_at_far=true"], ValueError, r"threshold_at_far=True: expected"),
        (["overwrite=yes"], ValueError, r"overwrite='yes': expected true or false"),
        (["export.opset=abc"], ValueError, r"export.opset='abc': expected an ONNX opset version"),
        (
            ["metrics_file=m.json", "export.onnx=m.onnx", "export.opset=17"],
            ValueError,
            r"metrics_file and export.onnx's sidecar both",
        ),
    ],
)
def test_eval_options_are_parsed_before_the_checkpoint_is_read(tmp_path, overrides, error, message):
    overrides = [item.replace("m.json", str(tmp_path / "m.json")).replace("m.onnx", str(tmp_path / "m.onnx"))
                 for item in overrides]  # fmt: skip
    with pytest.raises(error, match=message):
        evaluate(compose_config(NEVER_READ, *overrides, config_name="eval", output_dir=tmp_path / "run"))


def test_eval_outputs_are_checked_before_the_evaluation(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "old.json").write_text("keep")
    (tmp_path / "net.onnx").mkdir()
    (tmp_path / "model.json").write_text("keep")
    for overrides, error, message in (
        ([f"metrics_file={tmp_path / 'file' / 'm.json'}"], PermissionError, "metrics_file=.*cannot be created"),
        ([f"metrics_file={tmp_path / 'old.json'}"], FileExistsError, "old.json exists: pass overwrite=true"),
        ([f"export.onnx={tmp_path / 'net.onnx'}"], IsADirectoryError, "export.onnx=.*net.onnx is a directory"),
        ([f"export.onnx={tmp_path / 'model.onnx'}"], FileExistsError, "sidecar=.*model.json exists: pass overwrite"),
    ):
        with pytest.raises(error, match=message):
            evaluate(compose_config(NEVER_READ, *overrides, config_name="eval", output_dir=tmp_path / "run"))
    assert (tmp_path / "old.json").read_text() == "keep" and (tmp_path / "model.json").read_text() == "keep"


def test_a_threshold_at_far_needs_ten_over_far_impostor_pairs(checkpoint, data_dir, tmp_path, monkeypatch, capsys):
    """synthetic_mini has 20 impostor pairs: FAR 0.1 needs 100, FAR 1e-300 cannot be measured at all."""
    runs = itertools.count()

    def eval_config(*overrides: str):
        return compose_config(
            "data=synthetic_mini", f"ckpt_path={checkpoint}", *overrides,
            config_name="eval", output_dir=tmp_path / f"run{next(runs)}", data_dir=data_dir,
        )  # fmt: skip

    def refuse(*args, **kwargs):
        raise AssertionError("evaluated before the impostor pairs were counted")

    with monkeypatch.context() as patch:
        patch.setattr(L.Trainer, "validate", refuse)
        message = (
            r"threshold_at_far=0.1 needs at least 100 impostor .* 'synthetic' has 20: choose threshold_at_far >= 0.5"
        )
        with pytest.raises(ValueError, match=message):
            evaluate(eval_config("+threshold_at_far=0.1"))
        with pytest.raises(ValueError, match=r"threshold_at_far=1e-300 needs at least 1e\+301 impostor"):
            evaluate(eval_config("+threshold_at_far=1e-300"))
        with pytest.raises(ValueError, match=r"cannot be measured on the 20 impostor pairs .* at least 1/FAR = 100"):
            evaluate(eval_config("+threshold_at_far=0.01", "allow_few_impostors=true"))
        with pytest.raises(ValueError, match=r"threshold_set=lfw: no such verification set; choose one of synthetic"):
            evaluate(eval_config("+threshold_at_far=0.5", "+threshold_set=lfw"))
    results = evaluate(eval_config("+threshold_at_far=0.1", "allow_few_impostors=true"))
    assert "threshold@far=0.1" in results["synthetic"]
    assert "tar@far=1e-3" in results["synthetic"]  # the table's columns stay, marked
    assert "* rough: fewer impostor pairs than 10/FAR; synthetic has 20" in capsys.readouterr().out


def test_tar_at_far_cells_on_too_few_impostor_pairs_are_marked():
    results = {"lfw": {"tar@far=1e-3": 0.9, "tar@far=1e-4": 0.8}, "big": {"tar@far=1e-3": 0.7, "tar@far=1e-4": 0.6}}
    table = format_table(results, impostor_pairs={"lfw": 3000, "big": 50_000})
    cells = {column.header: list(column.cells) for column in table.columns}
    assert cells["tar@far=1e-3"] == ["0.9000*", "0.7000"] and cells["tar@far=1e-4"] == ["0.8000*", "0.6000*"]
    assert table.caption == (
        "* rough: fewer impostor pairs than 10/FAR; lfw has 3000 impostor pairs (tar@far=1e-3 needs 10000, "
        "tar@far=1e-4 needs 100000); big has 50000 impostor pairs (tar@far=1e-4 needs 100000)"
    )
