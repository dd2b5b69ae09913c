"""Files given as checkpoints are checked for what they are; resuming on renamed identities is refused."""

from __future__ import annotations

import shutil
from collections import OrderedDict
from fractions import Fraction

import pytest
import torch

from facerec.errors import CheckpointError
from facerec.module.checkpoint import read_training_checkpoint
from facerec.run.evaluation import evaluate
from facerec.run.training import train
from tests.helpers import compose_config


def refusal(path) -> str:
    with pytest.raises(CheckpointError) as error:
        read_training_checkpoint(path)
    assert "weights_only=False" not in str(error.value)
    return str(error.value)


def test_a_real_checkpoint_is_read(smoke_run):
    assert read_training_checkpoint(smoke_run / "checkpoints" / "last.ckpt")["global_step"] > 0


def test_a_text_file_is_named_as_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello")
    assert "is not a PyTorch checkpoint (a .ckpt is a zip archive; this file starts b'hell')" in refusal(
        tmp_path / "notes.ckpt"
    )


def test_a_truncated_checkpoint_says_so(smoke_run, tmp_path):
    (tmp_path / "cut.ckpt").write_bytes((smoke_run / "checkpoints" / "last.ckpt").read_bytes()[:4000])
    assert "is truncated or corrupt" in refusal(tmp_path / "cut.ckpt")


def test_a_bare_state_dict_points_to_backbone_checkpoint_path(tmp_path):
    torch.save(OrderedDict(weight=torch.zeros(2)), tmp_path / "net.pth")
    assert "bare state dict (1 tensors)" in refusal(tmp_path / "net.pth")
    assert f"backbone.checkpoint_path={tmp_path / 'net.pth'}" in refusal(tmp_path / "net.pth")


def test_python_objects_are_refused_without_unpickling_them(tmp_path):
    torch.save({"pytorch-lightning_version": "2", "payload": Fraction(1, 3)}, tmp_path / "objects.ckpt")
    assert "holds Python objects other than tensors and plain values" in refusal(tmp_path / "objects.ckpt")


def test_evaluation_names_what_the_file_is(tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello")
    cfg = compose_config(f"ckpt_path={tmp_path / 'notes.ckpt'}", config_name="eval", output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint") as error:
        evaluate(cfg)
    assert "weights_only=False" not in str(error.value)


def test_resuming_on_a_renamed_identity_is_refused_naming_it(smoke_run, data_dir, tmp_path):
    renamed = shutil.copytree(data_dir / "synthetic_mini" / "train", tmp_path / "train")
    first = sorted(path.name for path in renamed.iterdir())[0]
    (renamed / first).rename(renamed / f"{first}_renamed")
    checkpoint = smoke_run / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        "experiment=smoke", "data=folder", f"data.root={renamed}", f"ckpt_path={checkpoint}",
        output_dir=tmp_path / "run", data_dir=data_dir,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"was trained on other identities than data.root holds \(") as error:
        train(cfg)
    assert f"{first!r} in the checkpoint" in str(error.value)
