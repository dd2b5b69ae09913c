"""Face-net backbones train end to end inside FaceRecognitionModule, through Lightning, on the CPU."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from facerec.module.face_module import FaceRecognitionModule
from tests.helpers import compose_config, quiet_trainer

NUM_CLASSES = 4
IMAGE_SIZE = 32  # the smallest size with a (2, 2) final map after the face nets' stride 16


class LossRecorder(L.Callback):
    """Keeps the loss of every training step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def face_net_model(backbone: str, neck: str) -> FaceRecognitionModule:
    """The ``experiment=smoke`` model (16-d embeddings, 32×32 images) with a face-net backbone and neck."""
    cfg = compose_config("experiment=smoke", f"backbone={backbone}", f"neck={neck}")
    assert list(cfg.model.input_size) == [IMAGE_SIZE, IMAGE_SIZE]
    return instantiate(cfg.model, num_classes=NUM_CLASSES, _recursive_=False)


@pytest.mark.parametrize(("backbone", "neck"), [("iresnet18", "linear"), ("mobilefacenet", "gdc")])
def test_face_net_trains(backbone: str, neck: str) -> None:
    """A few SGD steps (batch 4, 32×32) give finite losses and move backbone and neck weights."""
    model = face_net_model(backbone, neck)
    assert model.net.backbone.pretrained_cfg["architecture"] == backbone
    before = {name: p.detach().clone() for name, p in model.net.named_parameters() if p.requires_grad}
    steps, batch_size = 2, 4
    images = torch.randn(steps * batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
    labels = torch.arange(steps * batch_size) % NUM_CLASSES
    recorder = LossRecorder()
    trainer = quiet_trainer(steps, callbacks=[recorder])
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(images, labels), batch_size=batch_size))

    assert len(recorder.losses) == steps
    assert torch.isfinite(torch.tensor(recorder.losses)).all()
    after = dict(model.net.named_parameters())
    unchanged = [name for name, p in before.items() if torch.equal(p, after[name])]
    assert not unchanged, f"{len(unchanged)} of {len(before)} parameters did not change: {unchanged[:5]}"
    model.eval()
    with torch.no_grad():
        assert model(images[:2]).shape == (2, model.hparams.embedding_size)
