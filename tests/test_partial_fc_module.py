"""Partial FC inside the LightningModule: training, whole-centre checkpoints, resuming."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from facerec.heads import PartialFC
from facerec.heads.partial_fc import CHECKPOINT_KEY
from facerec.module import FaceRecognitionModule
from tests.helpers import smoke_model

PARTIAL_FC = ("head=arcface", "classifier=partial_fc", "classifier.sample_rate=0.5")
CENTERS = "head.margin_head.center_loss.centers"


def trainer(steps: int, tmp_path) -> L.Trainer:
    return L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, enable_checkpointing=False,
    )  # fmt: skip


def loader(num_classes: int) -> DataLoader:
    images, labels = torch.randn(32, 3, 32, 32), torch.arange(32) % num_classes
    return DataLoader(TensorDataset(images, labels), batch_size=8)


def test_partial_fc_trains_checkpoints_whole_centres_and_resumes(tmp_path):
    model = smoke_model(*PARTIAL_FC, num_classes=6)
    assert isinstance(model.head, PartialFC)
    fit = trainer(2, tmp_path)
    fit.fit(model, train_dataloaders=loader(6))
    assert "train/loss" in fit.callback_metrics and "train/acc" not in fit.callback_metrics
    fit.save_checkpoint(tmp_path / "pfc.ckpt")
    checkpoint = torch.load(tmp_path / "pfc.ckpt", map_location="cpu", weights_only=False)
    slot = checkpoint[CHECKPOINT_KEY]["optimizer_slot"]
    momentum = checkpoint["optimizer_states"][slot[0]]["state"][slot[1]]["momentum_buffer"]
    assert checkpoint["state_dict"]["head.weight"].shape == momentum.shape == (6, 16)

    resumed = smoke_model(*PARTIAL_FC, num_classes=6)
    resume = trainer(2, tmp_path)
    resume.fit(resumed, train_dataloaders=loader(6), ckpt_path=tmp_path / "pfc.ckpt")
    assert torch.equal(resume.optimizers[0].state[resumed.head.weight]["momentum_buffer"], momentum)
    assert torch.equal(resumed.head.weight.detach(), checkpoint["state_dict"]["head.weight"])
    restored = FaceRecognitionModule.load_from_checkpoint(tmp_path / "pfc.ckpt", map_location="cpu")
    assert torch.equal(restored.head.weight.detach(), checkpoint["state_dict"]["head.weight"])


@pytest.mark.parametrize("update", ["paper", "sgd"])
def test_partial_fc_with_center_loss_trains_checkpoints_and_resumes_its_centres(tmp_path, update):
    """The center loss' centres (buffer or sgd parameter with its own lr) train, save and load replicated."""
    overrides = ("head=arcface_center", "classifier=partial_fc", f"head.update={update}")
    model = smoke_model(*overrides, num_classes=6)
    fit = trainer(2, tmp_path)
    fit.fit(model, train_dataloaders=loader(6))
    fit.save_checkpoint(tmp_path / "center.ckpt")
    checkpoint = torch.load(tmp_path / "center.ckpt", map_location="cpu", weights_only=False)
    centers = checkpoint["state_dict"][CENTERS]
    assert centers.shape == (6, 16) and centers.abs().sum() > 0, "the centres moved from zero"
    center_loss = model.head.margin_head.center_loss
    own_group = [g for g in fit.optimizers[0].param_groups if [id(p) for p in g["params"]] == [id(center_loss.centers)]]
    assert [g.get("initial_lr", g["lr"]) for g in own_group] == ([center_loss.center_lr] if update == "sgd" else [])

    resumed = smoke_model(*overrides, num_classes=6)
    resume = trainer(2, tmp_path)
    resume.fit(resumed, train_dataloaders=loader(6), ckpt_path=tmp_path / "center.ckpt")
    assert torch.equal(resumed.state_dict()[CENTERS], centers)
    if update == "sgd":
        slot = resume.optimizers[0].state[resumed.head.margin_head.center_loss.centers]
        assert slot["momentum_buffer"].abs().sum() > 0
    restored = FaceRecognitionModule.load_from_checkpoint(tmp_path / "center.ckpt", map_location="cpu")
    assert torch.equal(restored.state_dict()[CENTERS], centers)
