"""Runs that would train nothing, save nothing or misread their data fail loudly, before training.

The runs go through ``facerec.run.training.train`` in-process: that ``train.py`` turns such an error into a non-zero
exit with its message is tested once, in ``tests/heads/test_checks.py``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from facerec.data import FaceDataModule
from facerec.run.checks import check_monitor, output_dirs
from facerec.run.training import check_checkpoints_written, train
from tests.helpers import compose_config, write_identity_folder

TINY_FOLDER_RUN = ("experiment=smoke", "data=folder", "data.image_size=[16,16]", "data.num_workers=0")


def test_batch_larger_than_the_training_set_is_refused_naming_both_numbers(tmp_path):
    root = write_identity_folder(tmp_path / "faces", {"ann": 3, "bob": 3})
    run = tmp_path / "run"
    cfg = compose_config(*TINY_FOLDER_RUN, f"data.root={root}", "data.batch_size=64", output_dir=run)
    with pytest.raises(ValueError, match="data.batch_size=64 is larger than the 6 training images") as error:
        train(cfg)
    assert "Lower data.batch_size to at most 6" in str(error.value)
    assert not list(run.glob("checkpoints/*.ckpt")) and not (run / "metrics.json").exists()


def test_batches_are_counted_per_process(tmp_path):
    datamodule = FaceDataModule(write_identity_folder(tmp_path, {"ann": 3, "bob": 3}), batch_size=4, num_workers=0)
    datamodule.setup("fit")
    assert len(datamodule.train_dataloader()) == 1
    datamodule.batch_size = 7
    with pytest.raises(ValueError, match="data.batch_size=7 is larger than the 6 training images each of the 1"):
        datamodule.train_dataloader()


def test_data_root_one_level_too_high_is_refused_naming_the_folder_to_use(tmp_path):
    root = write_identity_folder(tmp_path / "parent", {"casia/0001": 2, "casia/0002": 2})
    cfg = compose_config(*TINY_FOLDER_RUN, f"data.root={root}", "data.batch_size=2", output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=r"1 training identity \(casia\); face recognition needs at least 2") as error:
        train(cfg)
    assert f"use data.root={root / 'casia'}" in str(error.value)


def test_one_identity_holding_most_images_in_sub_folders_is_warned_about(tmp_path, caplog):
    root = write_identity_folder(tmp_path, {"casia/0001": 3, "casia/0002": 3, "stray": 1})
    with caplog.at_level(logging.WARNING):
        assert FaceDataModule(root, num_workers=0).num_classes == 2
    assert f"{root / 'casia'} holds 6 of the 7 images, 6 of them in its sub-folders" in caplog.text
    assert f"use data.root={root / 'casia'}" in caplog.text


def test_identities_with_their_images_at_the_top_are_not_warned_about(tmp_path, caplog):
    root = write_identity_folder(tmp_path, {"ann": 5, "bob": 1})
    with caplog.at_level(logging.WARNING):
        FaceDataModule(root, num_workers=0).setup("fit")
    assert "sub-folders" not in caplog.text


def test_a_monitor_of_a_set_that_is_not_configured_is_refused_before_training(tmp_path, data_dir):
    cfg = compose_config("experiment=smoke", "monitor=val/lfw/accuracy", output_dir=tmp_path, data_dir=data_dir)
    with pytest.raises(ValueError) as error:
        train(cfg)
    message = "monitor=val/lfw/accuracy names verification set 'lfw', which is not configured (configured: synthetic)"
    assert message in str(error.value) and "e.g. monitor=val/synthetic/accuracy" in str(error.value)
    assert not list(tmp_path.glob("**/*.ckpt"))


def test_check_monitor_accepts_configured_sets_and_other_metrics():
    check_monitor("val/lfw/accuracy", {"lfw": {}})
    check_monitor("train/loss", {})
    check_monitor(None, {})
    with pytest.raises(ValueError, match=r"\(configured: none\), so set monitor=null"):
        check_monitor("val/lfw/auc", {})


def test_presets_monitor_the_first_configured_set():
    assert compose_config("experiment=quickstart").monitor == "val/synthetic/accuracy"
    mine = compose_config("experiment=quickstart", "data=folder", "data.root=x", "+data.val_sets.mine.bin=m.bin")
    assert mine.monitor == "val/mine/accuracy"
    assert compose_config("experiment=ms1mv3_iresnet50", "data.root=x").monitor == "val/lfw/accuracy"
    assert compose_config("experiment=ms1mv3_iresnet50", "data.root=x", "~data.val_sets.lfw").monitor == (
        "val/cfp_fp/accuracy"
    )


def test_an_unwritable_checkpoint_folder_is_refused_before_training(tmp_path, data_dir):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    run = tmp_path / "run"
    overrides = ("experiment=smoke", f"callbacks.last_checkpoint.dirpath={blocker / 'checkpoints'}")
    with pytest.raises(OSError, match=f"output directory {blocker / 'checkpoints'} is not writable"):
        train(compose_config(*overrides, output_dir=run, data_dir=data_dir))
    assert not list(run.rglob("*.ckpt"))


def test_a_checkpoint_that_was_not_written_fails_the_run(tmp_path):
    written = tmp_path / "last.ckpt"
    written.write_bytes(b"")
    callback = SimpleNamespace(last_model_path="", best_model_path=str(written))
    trainer = SimpleNamespace(checkpoint_callbacks=[callback], is_global_zero=True)
    check_checkpoints_written(trainer)
    callback.best_model_path = str(tmp_path / "epoch_001.ckpt")
    with pytest.raises(OSError, match=f"checkpoint {tmp_path / 'epoch_001.ckpt'} was not written: check that"):
        check_checkpoints_written(trainer)


def test_output_dirs_lists_every_folder_a_run_writes():
    cfg = compose_config("experiment=smoke", "paths.output_dir=/r", "logger=csv")
    assert output_dirs(cfg) == ["/r", "/r/checkpoints"]
