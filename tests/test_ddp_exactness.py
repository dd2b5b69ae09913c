"""Two CPU DDP processes (gloo) train exactly like one process on the same global batch.

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
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NamedTuple

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from facerec.callbacks import NonFiniteLossGuard
from tests.test_module import smoke_model


class Run(NamedTuple):
    overrides: tuple[str, ...]
    gradient_clip_val: float | None = None
    nan_sample: int | None = None


CENTER = ("head=center", "head.update=paper")
PARTIAL_FC = ("head=arcface", "head.partial_fc.enabled=true")
RUNS = {
    "arcface": Run(("head=arcface",)),
    "center": Run(CENTER),
    "partial_fc": Run(PARTIAL_FC),
    "partial_fc_clipped": Run(PARTIAL_FC, gradient_clip_val=1.0),
    "partial_fc_center": Run(("head=arcface_center", "head.partial_fc.enabled=true", "head.update=sgd")),
    "nonfinite_skipped": Run(CENTER, nan_sample=9),
}
STEPS, GLOBAL_BATCH, NUM_CLASSES = 3, 8, 5


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Keeps every batch-norm layer in eval mode, even when Lightning calls ``model.train()``."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = lambda mode=True, module=module: module
    return model


def train(name: str, devices: int, root: Path, accumulate: int = 1) -> L.Trainer:
    """Trains run ``name`` for ``STEPS`` steps of ``GLOBAL_BATCH`` samples; saves ``<name>_<devices>.ckpt``."""
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
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=STEPS,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=root, use_distributed_sampler=False,
        gradient_clip_val=run.gradient_clip_val, accumulate_grad_batches=accumulate,
        callbacks=[NonFiniteLossGuard(skip=True)],
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    trainer.save_checkpoint(root / f"{name}_{devices}.ckpt")
    return trainer


def skipped_steps(trainer: L.Trainer) -> int:
    return next(c.skipped for c in trainer.callbacks if isinstance(c, NonFiniteLossGuard))


def _worker(rank: int, port: int, root: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    for name in RUNS:
        trainer = train(name, 2, root)
        state = {**trainer.lightning_module.state_dict(), "skipped": torch.tensor(skipped_steps(trainer))}
        torch.save(state, root / f"{name}_rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), root), nprocs=2, join=True)
    return root


def assert_states_equal(actual: dict, expected: dict) -> None:
    for name, value in expected.items():
        assert torch.isfinite(value).all(), name
        torch.testing.assert_close(actual[name], value, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("name", RUNS)
def test_two_processes_end_identical_and_equal_one_process(two_process_run, name, tmp_path):
    ranks = [torch.load(two_process_run / f"{name}_rank{r}.pt", weights_only=True) for r in range(2)]
    single = train(name, 1, tmp_path)
    whole = torch.load(two_process_run / f"{name}_2.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    expected = single.lightning_module.state_dict()
    skips = int(RUNS[name].nan_sample is not None)
    assert [int(rank.pop("skipped")) for rank in ranks] == [skips, skips] and skipped_steps(single) == skips
    if name.startswith("partial_fc"):
        shards = torch.cat([ranks[0]["head.weight"], ranks[1]["head.weight"]])
        assert torch.equal(whole["head.weight"], shards), "checkpoint holds the gathered centres"
        for rank in ranks:
            rank["head.weight"] = shards
    for key in expected:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks differ in {key}"
    assert_states_equal(ranks[0], expected)


def test_gradient_clipping_bites(two_process_run):
    clipped = torch.load(two_process_run / "partial_fc_clipped_rank0.pt", weights_only=True)
    plain = torch.load(two_process_run / "partial_fc_rank0.pt", weights_only=True)
    assert all(not torch.equal(clipped[key], plain[key]) for key in ("head.weight", "net.neck.fc.weight"))


@pytest.mark.parametrize("name", ["center", "nonfinite_skipped"])
def test_accumulating_two_micro_batches_equals_one_batch(name, tmp_path):
    """Centre updates and the non-finite check cover every micro-batch of a step, once per step."""
    accumulated = train(name, 1, tmp_path / "accumulated", accumulate=2)
    single = train(name, 1, tmp_path / "single")
    assert skipped_steps(accumulated) == skipped_steps(single)
    assert_states_equal(accumulated.lightning_module.state_dict(), single.lightning_module.state_dict())
