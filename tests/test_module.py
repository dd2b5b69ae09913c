"""FaceRecognitionModule with every configured head, through Lightning, in-process."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import timm
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

from facerec.module.face_module import FaceRecognitionModule
from tests.helpers import REPO, quiet_trainer, smoke_model
from tests.models.helpers import randomize_norm_stats

HEADS = sorted(path.stem for path in (REPO / "conf" / "head").glob("*.yaml"))


def fit_steps(model: FaceRecognitionModule, steps: int = 3) -> None:
    images = torch.randn(8 * steps, 3, 32, 32)
    labels = torch.arange(8 * steps) % model.hparams.num_classes
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    quiet_trainer(steps).fit(model, train_dataloaders=loader)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_inside_the_module(head):
    model = smoke_model(f"head={head}")
    before = {name: tensor.clone() for name, tensor in model.head.state_dict().items()}
    fit_steps(model)
    after = model.head.state_dict()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed, f"no head state changed for {head}"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 16)


def test_center_loss_paper_rule_moves_the_centres_outside_the_optimizer():
    model = smoke_model("head=center", "head.terms.center.update=paper")
    key = next(name for name in model.head.state_dict() if name.endswith("centers"))
    before = model.head.state_dict()[key].clone()
    fit_steps(model)
    centres = model.head.state_dict()[key]
    assert not torch.equal(before, centres)
    optimized = {id(p) for group in model.trainer.optimizers[0].param_groups for p in group["params"]}
    assert all(id(buffer) not in optimized for buffer in model.head.buffers())


def test_checkpoint_rebuilds_the_model_alone(tmp_path):
    model = smoke_model("head=cosface")
    trainer = L.Trainer(accelerator="cpu", logger=False, max_steps=0, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    restored = FaceRecognitionModule.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    model.eval(), restored.eval()
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(images), restored(images))
    assert restored.hparams.class_names == ["id0", "id1", "id2", "id3"]


def cache_timm_weights(hub_cache, name: str = "test_resnet", revision: str = "0" * 40) -> None:
    """Random weights for timm model ``name`` in the layout of the Hugging Face hub cache."""
    repo = hub_cache / f"models--timm--{timm.models.get_pretrained_cfg(name).hf_hub_id.split('/')[1]}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file(timm.create_model(name).state_dict(), repo / "snapshots" / revision / "model.safetensors")


def test_checkpoint_rebuilds_without_the_weight_files_the_model_was_built_from(tmp_path, monkeypatch):
    """``backbone.pretrained`` and ``backbone.checkpoint_path`` load at build; the checkpoint needs neither."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    cache_timm_weights(tmp_path / "hub")
    source = smoke_model()
    randomize_norm_stats(source.net)
    torch.save(source.net.state_dict(), tmp_path / "net.pth")
    model = smoke_model("backbone.pretrained=true", f"backbone.checkpoint_path={tmp_path / 'net.pth'}")
    assert all(torch.equal(value, model.net.state_dict()[key]) for key, value in source.net.state_dict().items())
    trainer = L.Trainer(accelerator="cpu", logger=False, max_steps=0, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    (tmp_path / "net.pth").unlink()
    shutil.rmtree(tmp_path / "hub")

    restored = FaceRecognitionModule.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    assert (restored.hparams.backbone["pretrained"], restored.hparams.backbone["checkpoint_path"]) == (False, None)
    weights = restored.state_dict()
    assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())


def test_class_count_mismatch_is_explained():
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        FaceRecognitionModule(
            backbone={}, neck={}, head={}, optimizer={}, scheduler=None, num_classes=4, class_names=["a", "b", "c"]
        )


@pytest.mark.parametrize(("init_scale", "moved"), [(2.0**10, True), (2.0**126, False)])
def test_center_update_follows_the_fp16_scaler(init_scale, moved):
    """A step fp16's gradient scaler skips (inf gradients at a huge scale) leaves the centres alone."""
    model = smoke_model("head=center")
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    loader = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.arange(8) % 4), batch_size=8)
    trainer = quiet_trainer(1, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    trainer.fit(model, train_dataloaders=loader)
    assert (scaler.get_scale() < init_scale) is not moved
    assert bool(model.head.terms.center.centers.any()) is moved
