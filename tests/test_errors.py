"""Misconfigurations fail early with messages that say what is wrong and how to fix it."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import InstantiationException, MissingConfigException
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from facerec.models import build_embedding_net
from facerec.run.checks import check_devices, check_output_dir
from facerec.run.evaluation import evaluate
from facerec.run.training import train
from tests.helpers import compose_config, quiet_trainer, smoke_model


@pytest.mark.parametrize(
    ("group", "listed"), [("head", "arcface_center"), ("data", "synthetic_mini"), ("backbone", "iresnet50")]
)
def test_unknown_option_lists_the_valid_ones(group, listed):
    with pytest.raises(MissingConfigException, match=rf"(?s)Could not find '{group}/nope'.*{listed}"):
        compose_config(f"{group}=nope")


def test_unknown_backbone_name_through_train(data_dir, tmp_path):
    with pytest.raises(InstantiationException, match=r"unknown backbone \W+nope\W+: not in timm"):
        train(compose_config("experiment=smoke", "backbone.name=nope", output_dir=tmp_path, data_dir=data_dir))


def test_unknown_backbone_name_suggests_close_matches(data_dir, tmp_path):
    with pytest.raises(InstantiationException, match=r"unknown backbone \W+iresnet_50\W+: .*did you mean: iresnet50"):
        train(compose_config("experiment=smoke", "backbone.name=iresnet_50", output_dir=tmp_path, data_dir=data_dir))


def test_resuming_on_data_with_other_identities_names_both_counts(smoke_run, data_dir, tmp_path):
    cfg = compose_config(
        "experiment=smoke", f"ckpt_path={smoke_run / 'checkpoints' / 'last.ckpt'}",
        f"data.synthetic_dir={tmp_path / 'six'}", "data.synthetic.num_identities=6",
        output_dir=tmp_path, data_dir=data_dir,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"(?s)the head has 8 classes .* 6 identities.*backbone.checkpoint_path="):
        train(cfg)


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=f"output directory {blocker / 'run'} is not writable"):
        check_output_dir(blocker / "run")


def test_more_devices_than_gpus():
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"trainer.devices={count + 1} but only {count} CUDA GPU"):
        check_devices(OmegaConf.create({"accelerator": "gpu", "devices": count + 1}))


def test_image_size_the_backbone_cannot_take():
    backbone = {"_target_": "facerec.models.create_backbone", "name": "test_vit"}
    with pytest.raises(ValueError, match="backbone test_vit cannot take 30x30 images"):
        build_embedding_net(backbone, {"_target_": "facerec.models.necks.LinearNeck"}, 16, (30, 30))


def test_eval_without_checkpoint():
    cfg = compose_config(config_name="eval", output_dir="unused")
    with pytest.raises(ValueError, match="eval.py needs a checkpoint: python eval.py ckpt_path="):
        evaluate(cfg)


@pytest.mark.parametrize("bad_label", [4, -1])
def test_training_label_out_of_range_names_the_label_and_class_count(bad_label):
    model = smoke_model(num_classes=4)
    labels = torch.tensor([0, 1, 2, bad_label])
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), labels), batch_size=4)
    trainer = quiet_trainer(1)
    with pytest.raises(ValueError, match=rf"training label {bad_label} is outside \[0, 4\): the head has 4 classes"):
        trainer.fit(model, train_dataloaders=loader)
