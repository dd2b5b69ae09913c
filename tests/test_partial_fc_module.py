"""Partial FC inside the LightningModule: training with every margin head in 1 and 2 processes,
whole-centre checkpoints, resuming."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from facerec.heads import PartialFC, margin_class
from facerec.heads.classifiers.partial_fc_checkpoint import CHECKPOINT_KEY, consolidate, shard_directory
from facerec.module import FaceRecognitionModule, ShardedCentresDDPStrategy
from facerec.run.consolidate import main as consolidate_main
from tests.helpers import (
    free_port,
    head_parts,
    join_as_torchrun_rank,
    quiet_trainer,
    registered_heads,
    smoke_model,
    spawn,
)

PARTIAL_FC = ("head=arcface", "classifier=partial_fc", "classifier.sample_rate=0.5")
HEADS = registered_heads()
CENTERS = "head.terms.center.centers"
WEIGHT = "head.classifier.weight"


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
    assert isinstance(model.head.classifier, PartialFC)
    fit = trainer(2, tmp_path)
    fit.fit(model, train_dataloaders=loader(6))
    assert "train/loss" in fit.callback_metrics and "train/acc" not in fit.callback_metrics
    fit.save_checkpoint(tmp_path / "pfc.ckpt")
    checkpoint = torch.load(tmp_path / "pfc.ckpt", map_location="cpu", weights_only=False)
    slot = checkpoint[CHECKPOINT_KEY]["optimizer_slot"]
    momentum = checkpoint["optimizer_states"][slot[0]]["state"][slot[1]]["momentum_buffer"]
    assert checkpoint["state_dict"][WEIGHT].shape == momentum.shape == (6, 16)

    resumed = smoke_model(*PARTIAL_FC, num_classes=6)
    resume = trainer(2, tmp_path)
    resume.fit(resumed, train_dataloaders=loader(6), ckpt_path=tmp_path / "pfc.ckpt")
    assert torch.equal(resume.optimizers[0].state[resumed.head.weight]["momentum_buffer"], momentum)
    assert torch.equal(resumed.head.weight.detach(), checkpoint["state_dict"][WEIGHT])
    restored = FaceRecognitionModule.load_from_checkpoint(tmp_path / "pfc.ckpt", map_location="cpu")
    assert torch.equal(restored.head.weight.detach(), checkpoint["state_dict"][WEIGHT])


@pytest.mark.parametrize("update", ["paper", "sgd"])
def test_partial_fc_with_center_loss_trains_checkpoints_and_resumes_its_centres(tmp_path, update):
    """The center loss' centres (buffer or sgd parameter with its own lr) train, save and load replicated."""
    overrides = ("head=arcface_center", "classifier=partial_fc", f"head.terms.center.update={update}")
    model = smoke_model(*overrides, num_classes=6)
    fit = trainer(2, tmp_path)
    fit.fit(model, train_dataloaders=loader(6))
    fit.save_checkpoint(tmp_path / "center.ckpt")
    checkpoint = torch.load(tmp_path / "center.ckpt", map_location="cpu", weights_only=False)
    centers = checkpoint["state_dict"][CENTERS]
    assert centers.shape == (6, 16) and centers.abs().sum() > 0, "the centres moved from zero"
    center_loss = model.head.terms.center
    own_group = [g for g in fit.optimizers[0].param_groups if [id(p) for p in g["params"]] == [id(center_loss.centers)]]
    assert [g.get("initial_lr", g["lr"]) for g in own_group] == ([center_loss.center_lr] if update == "sgd" else [])

    resumed = smoke_model(*overrides, num_classes=6)
    resume = trainer(2, tmp_path)
    resume.fit(resumed, train_dataloaders=loader(6), ckpt_path=tmp_path / "center.ckpt")
    assert torch.equal(resumed.state_dict()[CENTERS], centers)
    if update == "sgd":
        slot = resume.optimizers[0].state[resumed.head.terms.center.centers]
        assert slot["momentum_buffer"].abs().sum() > 0
    restored = FaceRecognitionModule.load_from_checkpoint(tmp_path / "center.ckpt", map_location="cpu")
    assert torch.equal(restored.state_dict()[CENTERS], centers)


def sample_rate(name: str) -> float:
    """0.5, or 1.0 for a head whose margin refuses sampling (it needs every class: SphereFace2)."""
    return 1.0 if margin_class(head_parts(name)[0]).sampling == "refused" else 0.5


def train_sampled(name: str, steps: int = 3, **trainer_options) -> tuple[FaceRecognitionModule, torch.Tensor]:
    """Trains ``name`` with ``classifier=partial_fc`` at r = :func:`sample_rate` over 6 classes; the model and its
    initial centres."""
    torch.manual_seed(0)
    rate = f"classifier.sample_rate={sample_rate(name)}"
    model = smoke_model(f"head={name}", "classifier=partial_fc", rate, num_classes=6)
    initial = model.head.weight.detach().clone()
    quiet_trainer(steps, **trainer_options).fit(model, train_dataloaders=loader(6))
    return model, initial


def assert_trained_sampled_centres(model: FaceRecognitionModule, initial: torch.Tensor) -> None:
    head = model.head.classifier
    assert torch.isfinite(head.weight).all() and not torch.equal(head.weight.detach(), initial), "centres trained"
    if head.sampled is None:  # a head that refuses sampling, trained at r = 1
        return
    assert head.weight.grad is None and head.sampled.param.numel() == 0, "only the sampled rows had a gradient"
    state = model.trainer.optimizers[0].state
    assert head.sampled.param not in state and state[head.weight]["momentum_buffer"].shape == head.weight.shape


@pytest.mark.slow  # a matrix of every head; tests/heads/test_partial_fc.py checks each margin's math in the fast lane
@pytest.mark.parametrize("name", HEADS)
def test_sampled_partial_fc_trains_with_every_head(name):
    if sample_rate(name) == 1.0:
        with pytest.raises(Exception, match="needs every class"):
            smoke_model(f"head={name}", "classifier=partial_fc", "classifier.sample_rate=0.5", num_classes=6)
    model, initial = train_sampled(name)
    assert_trained_sampled_centres(model, initial)
    assert torch.isfinite(model.trainer.callback_metrics["train/loss"])


def test_sampled_partial_fc_accumulates_micro_batches_and_clips():
    model, initial = train_sampled("arcface", accumulate_grad_batches=2, gradient_clip_val=0.1)
    assert model.trainer.global_step == 3
    assert_trained_sampled_centres(model, initial)


def _two_process_worker(rank: int, port: int, root: Path) -> None:
    join_as_torchrun_rank(rank, port)
    torch.set_num_threads(1)
    for name in HEADS:
        strategy = ShardedCentresDDPStrategy(process_group_backend="gloo")
        model, initial = train_sampled(name, devices=2, strategy=strategy, default_root_dir=root)
        shard = model.head.classifier
        assert_trained_sampled_centres(model, initial[shard.class_start * shard.rows_per_class :][: len(shard.weight)])
        torch.save(dict(model.net.named_parameters()), root / f"{name}_partial_fc_rank{rank}.pt")
        torch.manual_seed(0)
        full = smoke_model(f"head={name}", num_classes=6)
        strategy = ShardedCentresDDPStrategy(process_group_backend="gloo")
        quiet_trainer(2, devices=2, strategy=strategy, default_root_dir=root).fit(full, train_dataloaders=loader(6))
        torch.save(dict(full.named_parameters()), root / f"{name}_full_rank{rank}.pt")


@pytest.mark.slow
def test_every_head_trains_with_either_classifier_in_two_processes(tmp_path):
    """``classifier=full``: the whole model stays identical on both ranks. ``partial_fc`` (r = 0.5, or 1 where the
    margin refuses sampling): each rank trains its own shard's sampled centres and the network stays identical
    (batch-norm statistics are each rank's own)."""
    spawn(_two_process_worker, free_port(), tmp_path)
    for name in HEADS:
        for kind in ("partial_fc", "full"):
            weights = [torch.load(tmp_path / f"{name}_{kind}_rank{r}.pt", weights_only=True) for r in range(2)]
            for key, value in weights[0].items():
                assert torch.isfinite(value).all(), f"{name} {kind}: {key} is not finite"
                assert torch.equal(weights[1][key], value), f"{name} {kind}: {key} differs between the ranks"


OLD_HEADS = {  # head configs as checkpoints written before heads were composed hold them
    "head=arcface": {"_target_": "facerec.heads.ArcFaceHead", "scale": 64.0, "margin": 0.5, "easy_margin": False},
    "head=arcface_center": {
        "_target_": "facerec.heads.ArcFaceCenterHead", "scale": 64.0, "margin": 0.5, "easy_margin": False,
        "center_weight": 0.003, "alpha": 0.5, "update": "paper", "center_lr": None, "center_on": "normalized",
        "classifier": {"name": "partial_fc", "sample_rate": 1.0},
    },
}  # fmt: skip


@pytest.mark.parametrize("overrides", [("head=arcface",), ("head=arcface_center", "classifier=partial_fc")])
def test_checkpoints_written_before_heads_were_composed_load(tmp_path, overrides):
    """Old head configs, centres in ``head.weight`` and center-loss state under ``head.margin_head.center_loss.``."""
    model = smoke_model(*overrides, num_classes=6)
    fit = trainer(1, tmp_path)
    fit.fit(model, train_dataloaders=loader(6))
    fit.save_checkpoint(tmp_path / "new.ckpt")
    checkpoint = torch.load(tmp_path / "new.ckpt", map_location="cpu", weights_only=False)
    expected = dict(checkpoint["state_dict"])
    checkpoint["hyper_parameters"]["head"] = OLD_HEADS[overrides[0]]
    state = checkpoint["state_dict"]
    state["head.weight"] = state.pop(WEIGHT)
    if "classifier=partial_fc" in overrides:
        state["head.margin_head.center_loss.centers"] = state.pop(CENTERS)
    torch.save(checkpoint, tmp_path / "old.ckpt")
    restored = FaceRecognitionModule.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
    assert restored.state_dict().keys() == expected.keys()
    assert all(torch.equal(restored.state_dict()[key], value) for key, value in expected.items())
    assert restored.hparams.head == model.hparams.head  # upgraded to today's composed config
    with pytest.raises(ValueError, match="cannot resume training"):
        trainer(2, tmp_path).fit(smoke_model(*overrides, num_classes=6), train_dataloaders=loader(6),
                                 ckpt_path=tmp_path / "old.ckpt")  # fmt: skip


SAMPLED = (*PARTIAL_FC[:2], "classifier.sample_rate=0.5")
NUM_CLASSES = 7  # shards of 4 + 3 (W = 2), 7 (W = 1), 3 + 2 + 2 (W = 3)


class RestoredRows(L.Callback):
    """At the start of training (after a resume), checks this rank's centres and momentum against the rows of
    ``expected`` (a checkpoint holding every centre)."""

    def __init__(self, expected: dict) -> None:
        self.expected = expected

    def on_train_start(self, trainer: L.Trainer, pl_module: FaceRecognitionModule) -> None:
        classifier = pl_module.head.classifier
        rows = slice(classifier.class_start, classifier.class_end)
        slot = self.expected[CHECKPOINT_KEY]["optimizer_slot"]
        momentum = self.expected["optimizer_states"][slot[0]]["state"][slot[1]]["momentum_buffer"]
        assert torch.equal(classifier.weight.detach(), self.expected["state_dict"][WEIGHT][rows])
        assert torch.equal(trainer.optimizers[0].state[classifier.weight]["momentum_buffer"], momentum[rows])


def whole_centres(path: Path) -> dict:
    """The checkpoint at ``path`` with its centres (consolidated from shard files if it has them)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "shards" in checkpoint[CHECKPOINT_KEY]:
        consolidate(checkpoint, path)
    return checkpoint


def resume_at(world_size: int, source: Path | None, target: Path, steps: int) -> None:
    """Trains the sampled Partial FC smoke model to ``steps`` on ``world_size`` processes (gloo when > 1), resuming
    from ``source`` (its rows checked on every rank), and saves ``target``."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = smoke_model(*SAMPLED, num_classes=NUM_CLASSES)
    if world_size > 1:
        options = {"devices": world_size, "strategy": ShardedCentresDDPStrategy(process_group_backend="gloo")}
    else:
        options = {}
    callbacks = [RestoredRows(whole_centres(source))] if source else []
    fit = quiet_trainer(steps, callbacks=callbacks, default_root_dir=target.parent, **options)
    fit.fit(model, train_dataloaders=loader(NUM_CLASSES), ckpt_path=source)
    fit.save_checkpoint(target)


def _resume_worker(rank: int, port: int, world_size: int, source: Path | None, target: Path, steps: int) -> None:
    join_as_torchrun_rank(rank, port, world_size)
    resume_at(world_size, source, target, steps)


@pytest.mark.slow
def test_sharded_checkpoints_resume_at_another_world_size(tmp_path):
    """2 gloo ranks write shard files; one process resumes them (an ordinary file), which 3 ranks resume; every
    rank starts from exactly its rows of centres and momentum; evaluation reads only the embedding network."""
    spawn(_resume_worker, free_port(), 2, None, tmp_path / "w2.ckpt", 2, nprocs=2)
    written = torch.load(tmp_path / "w2.ckpt", map_location="cpu", weights_only=True)
    assert WEIGHT not in written["state_dict"] and written[CHECKPOINT_KEY]["shards"]["world_size"] == 2
    assert len(list(shard_directory(tmp_path / "w2.ckpt").glob("*/rank*.pt"))) == 2
    resume_at(1, tmp_path / "w2.ckpt", tmp_path / "w1.ckpt", 4)
    assert torch.load(tmp_path / "w1.ckpt", weights_only=True)["state_dict"][WEIGHT].shape == (NUM_CLASSES, 16)
    spawn(_resume_worker, free_port(), 3, tmp_path / "w1.ckpt", tmp_path / "w3.ckpt", 6, nprocs=3)
    sharded = whole_centres(tmp_path / "w3.ckpt")
    assert sharded["global_step"] == 6 and sharded["state_dict"][WEIGHT].shape == (NUM_CLASSES, 16)
    net = FaceRecognitionModule.load_embedding_net(tmp_path / "w3.ckpt")
    assert net.head is None
    whole = FaceRecognitionModule.load_from_checkpoint(tmp_path / "w3.ckpt")  # e.g. to fine-tune: every centre
    assert torch.equal(whole.head.classifier.weight.detach(), sharded["state_dict"][WEIGHT])
    assert all(torch.equal(value, sharded["state_dict"][f"net.{key}"]) for key, value in net.net.state_dict().items())

    one_file = tmp_path / "one.ckpt"
    assert consolidate_main([str(tmp_path / "w3.ckpt"), str(one_file)]) == 0
    written = torch.load(one_file, weights_only=True)
    assert CHECKPOINT_KEY in written and "shards" not in written[CHECKPOINT_KEY]
    assert torch.equal(written["state_dict"][WEIGHT], sharded["state_dict"][WEIGHT])
    assert consolidate_main([str(tmp_path / "w3.ckpt"), str(one_file)]) == 2, "DST exists"
    assert consolidate_main([str(one_file), str(tmp_path / "again.ckpt")]) == 2, "not sharded"
    assert not (tmp_path / "again.ckpt").exists()
