"""FaceRecognitionModule with every configured head, through Lightning, in-process."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from facerec.module import FaceRecognitionModule
from tests.helpers import REPO

HEADS = sorted(path.stem for path in (REPO / "conf" / "head").glob("*.yaml"))


def smoke_model(*overrides: str, num_classes: int = 4) -> FaceRecognitionModule:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=smoke", *overrides])
    names = [f"id{i}" for i in range(num_classes)]
    return instantiate(cfg.model, num_classes=num_classes, class_names=names, _recursive_=False)


def fit_steps(model: FaceRecognitionModule, steps: int = 3) -> None:
    images = torch.randn(8 * steps, 3, 32, 32)
    labels = torch.arange(8 * steps) % model.hparams.num_classes
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)


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
    model = smoke_model("head=center", "head.update=paper")
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


def test_class_count_mismatch_is_explained():
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        FaceRecognitionModule(
            backbone={}, neck={}, head={}, optimizer={}, scheduler=None, num_classes=4, class_names=["a", "b", "c"]
        )
