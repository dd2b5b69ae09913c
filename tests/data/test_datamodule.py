"""FaceDataModule over both training formats and both verification-set forms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from facerec.data import FaceDataModule
from facerec.data.__main__ import main
from facerec.data.decode import ImageSizeError
from facerec.data.synthetic import SyntheticSpec, generate
from facerec.data.tools import folder_to_rec
from facerec.data.training.folder import scan_identity_folder
from facerec.data.training.recordio import IRHeader, RecordWriter, pack
from facerec.run.training import train
from tests.helpers import compose_config, evaluate_in_process, quiet_trainer, read_metrics, shared_file, write_image

TINY = SyntheticSpec(
    num_identities=3,
    images_per_identity=4,
    heldout_identities=3,
    heldout_images_per_identity=2,
    folds=10,
    pairs_per_fold=1,
    image_size=32,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny synthetic set (``train/``, ``heldout/``) plus its ``rec/train.rec``."""
    root = generate(tmp_path_factory.mktemp("tiny") / "synthetic", TINY)
    folder_to_rec(root / "train", root / "rec")
    return root


def test_folder2rec_then_train_with_data_rec(tiny, tmp_path):
    assert main(["folder2rec", str(tiny / "train"), str(tmp_path / "rec")]) == 0
    run = tmp_path / "run"
    cfg = compose_config(
        "experiment=smoke",
        "data=rec",
        f"data.root={tmp_path / 'rec'}",
        "data.image_size=[32,32]",
        "data.batch_size=4",
        "data.num_workers=0",
        f"+data.val_sets.heldout.pairs={tiny / 'heldout' / 'pairs.txt'}",
        f"+data.val_sets.heldout.images={tiny / 'heldout' / 'images'}",
        "trainer.max_epochs=1",
        output_dir=run,
        data_dir=tmp_path / "data",
    )
    train(cfg)
    assert json.loads((run / "classes.json").read_text()) == ["0", "1", "2"]
    assert 0.0 <= read_metrics(run / "metrics.json")["heldout"]["accuracy"] <= 1.0


def test_rec_labels_equal_folder_labels(tiny):
    folder = FaceDataModule(root=str(tiny / "train"), num_workers=0)
    rec = FaceDataModule(root=str(tiny / "rec"), format="rec", num_workers=0)
    assert rec.class_names == ["0", "1", "2"] and folder.num_classes == rec.num_classes == 3
    folder.setup("fit")
    rec.setup("fit")
    assert rec.train_set.labels == list(folder.train_set.labels) == scan_identity_folder(tiny / "train").labels


def test_rec_class_names_need_no_image_decoding(tmp_path):
    (tmp_path / "rec").mkdir()
    with RecordWriter(tmp_path / "rec" / "train.rec", tmp_path / "rec" / "train.idx") as writer:
        for key, label in enumerate([0, 4, 2]):
            writer.write(key, pack(IRHeader(0, label, key, 0), b"not a jpeg"))
    assert FaceDataModule(root=str(tmp_path / "rec"), format="rec").num_classes == 5


def test_rec_multi_worker_loading(tiny):
    datamodule = FaceDataModule(
        root=str(tiny / "rec"), format="rec", image_size=(32, 32), batch_size=4, num_workers=2, prefetch_factor=1
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 1
    batches = list(loader)
    assert len(batches) == 3 and all(images.shape == (4, 3, 32, 32) for images, _ in batches)
    assert sorted(label for _, labels in batches for label in labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


@pytest.fixture
def golden_rec(tmp_path) -> Path:
    """A folder holding the real MXNet ``golden.rec`` + ``.idx`` as ``train.rec`` + ``train.idx``."""
    golden = shared_file("mxnet_recordio/golden.rec")
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "train.rec").symlink_to(golden)
    (tmp_path / "golden" / "train.idx").symlink_to(golden.with_suffix(".idx"))
    return tmp_path / "golden"


def test_training_from_the_golden_rec(golden_rec):
    datamodule = FaceDataModule(root=str(golden_rec), format="rec", batch_size=3, num_workers=0, strict_size=True)
    assert datamodule.class_names == ["0", "1", "2"]
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (3, 3, 112, 112) and images.dtype == torch.float32 and labels.max() <= 2


def test_two_training_steps_on_the_golden_rec(golden_rec, tmp_path):
    datamodule = FaceDataModule(
        root=str(golden_rec), format="rec", strict_size=True, batch_size=3, num_workers=0, pin_memory=False
    )
    cfg = compose_config("experiment=smoke", "data.image_size=[112,112]")
    model = instantiate(cfg.model, num_classes=3, class_names=datamodule.class_names, _recursive_=False)
    before = [parameter.detach().clone() for parameter in model.net.parameters()]
    trainer = quiet_trainer(2, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net.parameters(), strict=True))


def test_unknown_format_is_explained(tiny):
    with pytest.raises(ValueError, match=r"unknown data.format 'lmdb'; choose one of folder, rec"):
        FaceDataModule(root=str(tiny / "rec"), format="lmdb").setup("fit")


def test_bin_verification_set_through_the_val_dataloader():
    path = shared_file("insightface/small_lfw.bin")
    datamodule = FaceDataModule(val_sets={"lfw": {"bin": str(path)}}, image_size=(56, 56), eval_batch_size=8)
    datamodule.setup("validate")
    (val_set,) = datamodule.val_sets
    assert val_set.name == "lfw" and len(val_set) == 10 and val_set.issame.dtype == bool
    assert val_set.pairs.tolist() == [[2 * k, 2 * k + 1] for k in range(10)]
    (loader,) = datamodule.val_dataloader()
    images, indices = next(iter(loader))
    assert images.shape == (8, 3, 56, 56) and indices.tolist() == list(range(8))


def test_eval_scores_a_real_bin_end_to_end(smoke_checkpoint, data_dir, tmp_path, capsys):
    checkpoint = smoke_checkpoint
    hyper_parameters = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hyper_parameters["input_size"] == [32, 32], "the .bin's 112x112 images must be resized to the model's input"
    evaluate_in_process(
        "data=folder",
        "data.num_workers=0",
        f"ckpt_path={checkpoint}",
        f"+data.val_sets.lfw.bin={shared_file('insightface/small_lfw.bin')}",
        f"metrics_file={tmp_path / 'lfw.json'}",
        output_dir=tmp_path / "run",
        data_dir=data_dir,
    )
    metrics = read_metrics(tmp_path / "lfw.json")
    assert list(metrics) == ["lfw"] and "│ lfw " in capsys.readouterr().out  # the printed table's row
    lfw = metrics["lfw"]
    assert 0.0 <= lfw["accuracy"] <= 1.0 and lfw["accuracy_std"] >= 0.0 and lfw["xnorm"] > 0.0
    # small_lfw.bin holds only same-identity pairs (one per fold): no ROC, so its summaries are NaN.
    assert all(math.isnan(lfw[key]) for key in ("auc", "eer", "tar@far=1e-3", "tar@far=1e-4"))


def test_strict_size_names_the_file_and_both_sizes(tmp_path):
    write_image(tmp_path / "train" / "ann" / "a.jpg", size=(8, 6))
    write_image(tmp_path / "train" / "bob" / "b.jpg", size=(16, 16))
    datamodule = FaceDataModule(
        root=str(tmp_path / "train"), image_size=(16, 16), strict_size=True, batch_size=2, num_workers=0
    )
    datamodule.setup("fit")
    with pytest.raises(ImageSizeError, match=r"ann/a\.jpg is 8x6 \(HxW\), .*data.image_size 16x16"):
        datamodule.train_set[0]
    folder_to_rec(tmp_path / "train", tmp_path / "rec")
    rec = FaceDataModule(root=str(tmp_path / "rec"), format="rec", image_size=(16, 16), strict_size=True, batch_size=2)
    rec.setup("fit")
    with pytest.raises(ImageSizeError, match=r"train\.rec@\d+ is 8x6"):
        rec.train_set[0]
    bin_set = {"lfw": {"bin": str(shared_file("insightface/small_lfw.bin"))}}
    with pytest.raises(ImageSizeError, match=r"small_lfw\.bin\[0\] is 112x112"):
        FaceDataModule(val_sets=bin_set, image_size=(16, 16), strict_size=True).setup("validate")
    resized = FaceDataModule(root=str(tmp_path / "train"), image_size=(16, 16), batch_size=2, num_workers=0)
    resized.setup("fit")
    assert resized.train_set[0][0].shape == (3, 16, 16)


def test_pairs_set_drop_missing(tmp_path, caplog):
    (tmp_path / "pairs.txt").write_text("1\t1\nbob\t1\t2\nbob\t1\tann\t1\n")
    write_image(tmp_path / "images" / "bob" / "bob_0001.jpg")
    write_image(tmp_path / "images" / "bob" / "bob_0002.jpg")
    options = {"pairs": str(tmp_path / "pairs.txt"), "images": str(tmp_path / "images")}
    with pytest.raises(FileNotFoundError, match=r"ann_0001\.jpg\); .*data.val_sets.lfw.drop_missing=true"):
        FaceDataModule(val_sets={"lfw": options}).setup("validate")
    datamodule = FaceDataModule(val_sets={"lfw": {**options, "drop_missing": True}})
    datamodule.setup("validate")
    (val_set,) = datamodule.val_sets
    assert val_set.pairs.tolist() == [[0, 1]] and val_set.issame.tolist() == [True] and len(val_set.images) == 2
    assert "dropped 1 of 2 pairs" in caplog.text and "no longer comparable" in caplog.text
    (tmp_path / "pairs.txt").write_text("1\nann\t1\t2\nbob\t1\tann\t1\n")
    with pytest.raises(ValueError, match=r"every pair of .*pairs\.txt has a missing image"):
        FaceDataModule(val_sets={"lfw": {**options, "drop_missing": True}}).setup("validate")


def test_val_set_options_must_be_one_form(tmp_path):
    for options in ({"bin": "x.bin", "pairs": "p.txt"}, {"pairs": "p.txt"}, {"bin": "x.bin", "drop_missing": True}):
        with pytest.raises(ValueError, match=r"data.val_sets.lfw has keys .*give either 'pairs' and 'images'"):
            FaceDataModule(val_sets={"lfw": options}).setup("validate")
