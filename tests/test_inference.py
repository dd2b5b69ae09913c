"""facerec.load_model, python -m facerec.embed, and the decision threshold stored beside the ONNX export."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

import facerec
from facerec.data.decode import read_image
from facerec.data.training.folder import list_image_files
from facerec.data.verification.sets import load_pairs_set
from facerec.embed import main as embed_main
from facerec.embed import read_embeddings
from facerec.eval.verification import l2_normalize, pair_distances
from facerec.inference import FaceEmbedder, OnnxFaceEmbedder, OnnxModelError, read_sidecar
from facerec.run.evaluation import evaluate
from facerec.run.export import export_onnx
from tests.helpers import compose_config, module_embeddings


def normalised_module_embeddings(smoke_checkpoint, files) -> np.ndarray:
    return l2_normalize(module_embeddings(smoke_checkpoint, [read_image(path) for path in files]))


def test_load_model_embeds_as_the_module_with_flip(smoke_checkpoint, synthetic_heldout):
    files = list_image_files(synthetic_heldout / "images")[:5]
    model = facerec.load_model(smoke_checkpoint, device="cpu")
    assert isinstance(model, FaceEmbedder) and not model.training and model.flip
    assert model.input_size == (32, 32)
    embeddings = model.embed_images([read_image(path) for path in files])
    assert embeddings.dtype == np.float32 and embeddings.shape == (5, 16)
    np.testing.assert_allclose(embeddings, normalised_module_embeddings(smoke_checkpoint, files), atol=1e-5)
    unflipped = facerec.load_model(smoke_checkpoint, flip=False, device="cpu").embed_images([read_image(files[0])])
    assert np.abs(unflipped - embeddings[:1]).max() > 1e-4


def test_load_model_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        facerec.load_model(tmp_path / "missing.ckpt")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"expected a training checkpoint \(.ckpt\) or an ONNX export"):
        facerec.load_model(tmp_path / "model.pt")


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_embed_cli_writes_names_and_normalised_embeddings(
    smoke_checkpoint, synthetic_heldout, tmp_path, suffix, capsys
):
    out = tmp_path / f"embeddings{suffix}"
    assert (
        embed_main([str(smoke_checkpoint), str(synthetic_heldout / "images"), "--out", str(out), "--workers", "0"]) == 0
    )
    assert f"wrote {out}: 18 L2-normalised 16-d embeddings" in capsys.readouterr().out
    names, embeddings = read_embeddings(out)
    files = list_image_files(synthetic_heldout / "images")
    assert names == [path.relative_to(synthetic_heldout / "images").as_posix() for path in files]
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(embeddings, normalised_module_embeddings(smoke_checkpoint, files), atol=1e-5)


def test_embed_cli_reads_a_list_and_names_missing_images(smoke_checkpoint, synthetic_heldout, tmp_path, capsys):
    files = list_image_files(synthetic_heldout / "images")[:3]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([str(files[0]), "# a comment", "", str(files[2])]) + "\n")
    out = tmp_path / "e.npz"
    assert embed_main([str(smoke_checkpoint), str(listing), "--out", str(out), "--workers", "0", "--no-flip"]) == 0
    names, embeddings = read_embeddings(out)
    assert names == [str(files[0]), str(files[2])] and embeddings.shape == (2, 16)
    listing.write_text(f"{files[0]}\nnot/there.jpg\n")
    assert embed_main([str(smoke_checkpoint), str(listing), "--out", str(tmp_path / "f.npz")]) == 2
    assert "lists 1 images that do not exist: not/there.jpg" in capsys.readouterr().err
    assert embed_main([str(smoke_checkpoint), str(listing), "--out", str(tmp_path / "f.csv")]) == 2
    assert "choose a file ending in .npz or .parquet" in capsys.readouterr().err
    assert not (tmp_path / "f.npz").exists() and not (tmp_path / "f.csv").exists()


def test_threshold_at_far_is_stored_beside_the_onnx_export_and_keeps_its_promise(
    smoke_checkpoint, synthetic_heldout, data_dir, tmp_path, capsys
):
    onnx = tmp_path / "export" / "net.onnx"
    cfg = compose_config(
        "data=synthetic_mini", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        f"ckpt_path={smoke_checkpoint}", f"export.onnx={onnx}", "+threshold_at_far=0.1", "allow_few_impostors=true",
        config_name="eval", output_dir=tmp_path / "run", data_dir=data_dir,
    )  # fmt: skip
    results = evaluate(cfg)
    sidecar = json.loads(onnx.with_suffix(".json").read_text())
    assert sidecar["input_size"] == [32, 32] and sidecar["flip"] is True and sidecar["embedding_size"] == 16
    threshold = sidecar["threshold"]
    assert threshold["set"] == "synthetic" and threshold["far"] == 0.1
    assert threshold["cosine"] == pytest.approx(1 - threshold["distance"] / 2)
    assert results["synthetic"]["threshold@far=0.1"] == threshold["distance"]
    assert (
        json.loads((tmp_path / "run" / "metrics.json").read_text())["synthetic"]["threshold@far=0.1"]
        == (threshold["distance"])
    )
    assert f"<= {threshold['distance']:.6g}" in capsys.readouterr().out

    # The ONNX model, flipped as the sidecar says, embeds as the checkpoint; the stored rule keeps FAR <= 0.1.
    model = facerec.load_model(onnx)
    assert isinstance(model, OnnxFaceEmbedder) and model.flip and model.metadata["threshold"] == threshold
    protocol = load_pairs_set("synthetic", synthetic_heldout / "pairs.txt", synthetic_heldout / "images")
    embeddings = model.embed_images([read_image(path) for path in protocol.images])
    np.testing.assert_allclose(embeddings, normalised_module_embeddings(smoke_checkpoint, protocol.images), atol=1e-4)
    distances = pair_distances(embeddings[protocol.pairs[:, 0]], embeddings[protocol.pairs[:, 1]])
    accepted = distances <= threshold["distance"] + 1e-6
    assert accepted[~protocol.issame].mean() <= 0.1
    assert accepted[protocol.issame].mean() == pytest.approx(threshold["tar"])


SIDECAR = {"input_size": [8, 8], "crop": None, "flip": True, "embedding_size": 4, "threshold": None}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"flip": "no"}, r"key 'flip' is 'no': expected true or false \(a JSON boolean\)"),
        ({"flip": 0}, r"key 'flip' is 0: expected true or false"),
        ({"input_size": "abc"}, r"key 'input_size' is 'abc': expected two positive integers \[H, W\]"),
        ({"input_size": [8.0, 8]}, r"key 'input_size' is \[8.0, 8\]: expected two positive integers"),
        ({"input_size": [8, 0]}, r"key 'input_size' is \[8, 0\]"),
        ({"input_size": None}, r"key 'input_size' is None"),
        ({"crop": "abcd"}, r"key 'crop' is 'abcd': expected null, a centre fraction in \(0, 1\] or a box"),
        ({"crop": [[1], 2, 3, 4]}, r"key 'crop' is \[\[1\], 2, 3, 4\]"),
        ({"crop": 2}, r"key 'crop' is 2: expected null, a centre fraction"),
        ({"embedding_size": "4"}, r"key 'embedding_size' is '4': expected a positive integer or null"),
        ({"threshold": {"distance": "x"}}, r"key 'threshold' is \{'distance': 'x'\}: expected null or an object"),
        ({"threshold": 0.5}, r"key 'threshold' is 0.5: expected null or an object whose 'distance'"),
        ({"input_size": list(range(10_000))}, r"key 'input_size' is \[0, 1, 2, .{60,70}\.\.\.: expected two"),
    ],
)
def test_read_sidecar_names_the_wrong_key_and_what_it_expects(tmp_path, changes, message):
    (tmp_path / "net.json").write_text(json.dumps(SIDECAR | changes))
    with pytest.raises(OnnxModelError, match=rf"net.json: {message}"):
        read_sidecar(tmp_path / "net.onnx")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"net.onnx: its sidecar .*net.json is missing: it holds the input size, face crop, flip setting and "),
        (b"{", r"net.json is not valid JSON"),
        (b"\xff\xfe{}", r"net.json is not valid JSON"),
        (b"[" * 100_000, r"net.json is not valid JSON"),
        (b"[8, 8]", r"net.json: expected a JSON object such as \{\"input_size\""),
        (b'{"input_size": [8, 8]}', r"net.json: key 'flip' is missing"),
        (b"", r"net.json is not a file \(a folder\?\): expected the sidecar JSON of .*net.onnx"),
    ],
    ids=["missing", "truncated", "not-utf8", "deep", "list", "no-flip", "folder"],
)
def test_read_sidecar_refuses_a_missing_or_broken_file(tmp_path, content, message):
    if content == b"":
        (tmp_path / "net.json").mkdir()
    elif content is not None:
        (tmp_path / "net.json").write_bytes(content)
    with pytest.raises(OnnxModelError, match=message):
        read_sidecar(tmp_path / "net.onnx")


def test_an_onnx_file_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "model.onnx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(OnnxModelError, match=r"model.onnx is a zip archive \(a PyTorch checkpoint\?\), not an ONNX"):
        facerec.load_model(path)
    path.write_bytes(b"\x08garbage" * 10)
    with pytest.raises(OnnxModelError, match=r"model.onnx is not an ONNX model onnxruntime can load \(.*\)"):
        facerec.load_model(path)


def test_onnx_export_needs_a_sidecar_that_agrees_with_its_graph(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    onnx = export_onnx(net, tmp_path / "net.onnx", (8, 8))
    sidecar = onnx.with_suffix(".json")
    sidecar.write_text(json.dumps(SIDECAR | {"flip": False}))
    model = facerec.load_model(onnx)
    assert model.input_size == (8, 8) and not model.flip and model.metadata["threshold"] is None
    for changes, message in [
        ({"input_size": [8, 9]}, r"key 'input_size' is \[8, 9\] but the graph .*net.onnx takes \[8, 8\]"),
        ({"embedding_size": 5}, r"key 'embedding_size' is 5 but the graph .*net.onnx gives 4"),
    ]:
        sidecar.write_text(json.dumps(SIDECAR | changes))
        with pytest.raises(OnnxModelError, match=message):
            facerec.load_model(onnx)
    sidecar.unlink()
    with pytest.raises(OnnxModelError, match=r"sidecar .* is missing"):  # the stored threshold is not dropped silently
        facerec.load_model(onnx)
    torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(onnx), dynamo=False, input_names=["x"])
    with pytest.raises(OnnxModelError, match=r"net.onnx is not a facerec export: its graph has inputs \['x'\]"):
        facerec.load_model(onnx)
