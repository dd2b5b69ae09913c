"""Two DDP processes train exactly like one process on the same global batch: on the CPU with gloo and,
marked ``gpu``, on 2 CUDA GPUs with NCCL (TF32 off there, so that float32 compares as tightly as on the CPU).

Design: each process is started with ``torch.multiprocessing.spawn`` and the environment torchrun
would set, so Lightning's DDP strategy joins it instead of launching. 2 processes × batch 4 and
1 process × batch 8 see the same samples per step: the loader uses a non-shuffling DistributedSampler
(Lightning's own would shuffle), so rank r gets indices r, r+2, … and step t's global batch is
samples 8t … 8t+7.
Batch norm would normalise each rank's 4 samples separately (SyncBatchNorm needs a GPU), so its
layers are frozen in eval mode: still affine and trained, but independent of the batch split.
For the same reason 1 process accumulating 2 micro-batches of 4 trains like 1 process × batch 8.

Every run has the non-finite guard (skip mode) on. ``nonfinite_skipped`` puts a NaN image in sample 9:
in the global batch of step 1, on rank 1 only, and in the first micro-batch of an accumulated step,
so the guard must reduce its decision across ranks and micro-batches. ``partial_fc_clipped`` clips
the gradient norm hard (the centres' gradient alone has a norm in the hundreds), which each rank must
compute over all shards. ``partial_fc_center`` shards ArcFace's centres while the center loss' ``sgd``
centres stay replicated: their gradient, computed from each rank's samples, must average to the
global batch's.
The checkpoint is saved at the end of training, while the model is still on its device (Lightning moves it to
the CPU after ``fit``); with Partial FC each rank writes its centres beside it.

The verification metric, gathered over 2 gloo processes (the sampler padding one), scores like one process.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from facerec.callbacks import NonFiniteLossGuard
from facerec.eval.metric import VerificationMetric
from facerec.heads.classifiers.partial_fc_checkpoint import consolidate, is_sharded
from facerec.module import ShardedCentresDDPStrategy
from tests.helpers import free_port, join_as_torchrun_rank, smoke_model, spawn, without_tf32


class Run(NamedTuple):
    overrides: tuple[str, ...]
    gradient_clip_val: float | None = None
    nan_sample: int | None = None


CENTER = ("head=center", "head.terms.center.update=paper")
PARTIAL_FC = ("head=arcface", "classifier=partial_fc")
RUNS = {
    "arcface": Run(("head=arcface",)),
    "center": Run(CENTER),
    "partial_fc": Run(PARTIAL_FC),
    "partial_fc_clipped": Run(PARTIAL_FC, gradient_clip_val=1.0),
    "partial_fc_center": Run(("head=arcface_center", "classifier=partial_fc", "head.terms.center.update=sgd")),
    "nonfinite_skipped": Run(CENTER, nan_sample=9),
}
STEPS, GLOBAL_BATCH, NUM_CLASSES = 3, 8, 5
ACCELERATORS = {"gloo": "cpu", "nccl": "gpu"}  # process-group backend → Lightning accelerator


class TwoProcessRun(NamedTuple):
    root: Path  # <name>_rank<r>.pt states and <name>_2.ckpt checkpoints
    backend: str


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Keeps every batch-norm layer in eval mode, even when Lightning calls ``model.train()``."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = lambda mode=True, module=module: module
    return model


class SaveAtTrainEnd(L.Callback):
    """Saves the checkpoint when training ends, before Lightning moves the model off its device."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


def train(name: str, devices: int, root: Path, accumulate: int = 1, backend: str = "gloo") -> L.Trainer:
    """Trains run ``name`` for ``STEPS`` steps of ``GLOBAL_BATCH`` samples; saves ``<name>_<devices>.ckpt``.

    ``backend`` picks the device too: gloo on the CPU, nccl on CUDA GPUs.
    """
    run = RUNS[name]
    torch.manual_seed(0)
    model = freeze_batchnorm(smoke_model(*run.overrides, num_classes=NUM_CLASSES))
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(STEPS * GLOBAL_BATCH, 3, 32, 32, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (STEPS * GLOBAL_BATCH,), generator=generator)
    if run.nan_sample is not None:
        images[run.nan_sample] = float("nan")
    dataset = TensorDataset(images, labels)
    sampler = DistributedSampler(dataset, devices, int(os.environ.get("RANK", 0)), shuffle=False)
    loader = DataLoader(dataset, batch_size=GLOBAL_BATCH // devices // accumulate, sampler=sampler)
    trainer = L.Trainer(
        accelerator=ACCELERATORS[backend], devices=devices, max_steps=STEPS,
        strategy=ShardedCentresDDPStrategy(process_group_backend=backend) if devices > 1 else "auto",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=root, use_distributed_sampler=False,
        gradient_clip_val=run.gradient_clip_val, accumulate_grad_batches=accumulate,
        callbacks=[NonFiniteLossGuard(skip=True), SaveAtTrainEnd(root / f"{name}_{devices}.ckpt")],
    )  # fmt: skip
    with without_tf32():
        trainer.fit(model, train_dataloaders=loader)
    return trainer


def skipped_steps(trainer: L.Trainer) -> int:
    return next(c.skipped for c in trainer.callbacks if isinstance(c, NonFiniteLossGuard))


def _worker(rank: int, port: int, root: Path, backend: str) -> None:
    join_as_torchrun_rank(rank, port)
    torch.set_num_threads(1)
    for name in RUNS:
        trainer = train(name, 2, root, backend=backend)
        state = {key: value.cpu() for key, value in trainer.lightning_module.state_dict().items()}
        state["skipped"] = torch.tensor(skipped_steps(trainer))
        torch.save(state, root / f"{name}_rank{rank}.pt")


@pytest.fixture(scope="module", params=["gloo", pytest.param("nccl", marks=pytest.mark.gpu)])
def two_process_run(request, tmp_path_factory) -> TwoProcessRun:
    backend = request.param
    if backend == "nccl" and torch.cuda.device_count() < 2:
        pytest.skip(f"NCCL DDP needs 2 CUDA GPUs; this machine has {torch.cuda.device_count()}")
    root = tmp_path_factory.mktemp(f"ddp_{backend}")
    spawn(_worker, free_port(), root, backend)
    return TwoProcessRun(root, backend)


def assert_states_equal(actual: dict, expected: dict) -> None:
    for name, value in expected.items():
        assert torch.isfinite(value).all(), name
        torch.testing.assert_close(actual[name], value, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("name", RUNS)
@pytest.mark.slow
def test_two_processes_end_identical_and_equal_one_process(two_process_run, name, tmp_path):
    root, backend = two_process_run
    ranks = [torch.load(root / f"{name}_rank{r}.pt", map_location="cpu", weights_only=True) for r in range(2)]
    single = train(name, 1, tmp_path, backend=backend)
    checkpoint = torch.load(root / f"{name}_2.ckpt", map_location="cpu", weights_only=True)
    if is_sharded(checkpoint):  # Partial FC: each rank wrote its centres beside the file
        consolidate(checkpoint, root / f"{name}_2.ckpt")
    whole = checkpoint["state_dict"]
    expected = {key: value.cpu() for key, value in single.lightning_module.state_dict().items()}
    skips = int(RUNS[name].nan_sample is not None)
    assert [int(rank.pop("skipped")) for rank in ranks] == [skips, skips] and skipped_steps(single) == skips
    if name.startswith("partial_fc"):
        shards = torch.cat([ranks[0]["head.classifier.weight"], ranks[1]["head.classifier.weight"]])
        assert torch.equal(whole["head.classifier.weight"], shards), "the checkpoint's shards are the ranks' centres"
        for rank in ranks:
            rank["head.classifier.weight"] = shards
    for key in expected:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks differ in {key}"
    assert_states_equal(ranks[0], expected)


@pytest.mark.slow
def test_gradient_clipping_bites(two_process_run):
    clipped = torch.load(two_process_run.root / "partial_fc_clipped_rank0.pt", weights_only=True)
    plain = torch.load(two_process_run.root / "partial_fc_rank0.pt", weights_only=True)
    assert all(not torch.equal(clipped[key], plain[key]) for key in ("head.classifier.weight", "net.neck.fc.weight"))


@pytest.mark.parametrize("name", ["center", "nonfinite_skipped"])
def test_accumulating_two_micro_batches_equals_one_batch(name, tmp_path):
    """Centre updates and the non-finite check cover every micro-batch of a step, once per step."""
    accumulated = train(name, 1, tmp_path / "accumulated", accumulate=2)
    single = train(name, 1, tmp_path / "single")
    assert skipped_steps(accumulated) == skipped_steps(single)
    assert_states_equal(accumulated.lightning_module.state_dict(), single.lightning_module.state_dict())


def verification_inputs(images: int = 49, pairs: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return (
        torch.randn(images, 8, generator=generator),
        torch.randint(0, images, (pairs, 2), generator=generator),
        torch.rand(pairs, generator=generator) < 0.5,
    )


def _metric_worker(rank: int, port: int, root: Path) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        embeddings, pairs, issame = verification_inputs()
        index = torch.tensor(list(DistributedSampler(range(len(embeddings)), 2, rank, shuffle=False)))
        rows = embeddings[index]
        if rank == 1:
            rows[-1] += 5.0  # the sampler's padded repeat of image 0: the gathered metric must keep rank 0's
        metric = VerificationMetric(pairs.numpy(), issame.numpy(), len(embeddings), n_folds=10)
        for batch in range(0, len(index), 4):
            metric.update(rows[batch : batch + 4], index[batch : batch + 4])
        (root / f"metric_rank{rank}.pkl").write_bytes(pickle.dumps(metric.compute()))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_verification_metric_gathers_two_processes_like_one(tmp_path):
    """Each process holds half the images (one padded repeat on rank 1); both compute the single-process result."""
    spawn(_metric_worker, free_port(), tmp_path)
    embeddings, pairs, issame = verification_inputs()
    metric = VerificationMetric(pairs.numpy(), issame.numpy(), len(embeddings), n_folds=10)
    metric.update(embeddings, torch.arange(len(embeddings)))
    expected = metric.compute()
    for rank in range(2):
        result = pickle.loads((tmp_path / f"metric_rank{rank}.pkl").read_bytes())
        assert result.metrics == expected.metrics, rank
        assert all(np.array_equal(a, b) for a, b in zip(result.roc, expected.roc, strict=True))
