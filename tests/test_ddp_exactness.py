"""Two CPU DDP processes (gloo) train exactly like one process on the same global batch.

Design: each process is started with ``torch.multiprocessing.spawn`` and the environment torchrun
would set, so Lightning's DDP strategy joins it instead of launching. 2 processes × batch 4 and
1 process × batch 8 see the same samples per step: the loader uses a non-shuffling DistributedSampler
(Lightning's own would shuffle), so rank r gets indices r, r+2, … and step t's global batch is
samples 8t … 8t+7.
Batch norm would normalise each rank's 4 samples separately (SyncBatchNorm needs a GPU), so its
layers are frozen in eval mode: still affine and trained, but independent of the batch split.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from facerec.module import FaceRecognitionModule
from tests.test_module import smoke_model

HEADS = {
    "arcface": ("head=arcface",),
    "center": ("head=center", "head.update=paper"),
    "partial_fc": ("head=arcface", "head.partial_fc.enabled=true"),
}
STEPS, GLOBAL_BATCH, NUM_CLASSES = 3, 8, 5


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Keeps every batch-norm layer in eval mode, even when Lightning calls ``model.train()``."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = lambda mode=True, module=module: module
    return model


def train(head: str, devices: int, root: Path) -> FaceRecognitionModule:
    torch.manual_seed(0)
    model = freeze_batchnorm(smoke_model(*HEADS[head], num_classes=NUM_CLASSES))
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(STEPS * GLOBAL_BATCH, 3, 32, 32, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (STEPS * GLOBAL_BATCH,), generator=generator)
    dataset = TensorDataset(images, labels)
    sampler = DistributedSampler(dataset, devices, int(os.environ.get("RANK", 0)), shuffle=False)
    loader = DataLoader(dataset, batch_size=GLOBAL_BATCH // devices, sampler=sampler)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=STEPS,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=root, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    trainer.save_checkpoint(root / f"{head}_{devices}.ckpt")
    return model


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
    for head in HEADS:
        model = train(head, 2, root)
        torch.save(model.state_dict(), root / f"{head}_rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), root), nprocs=2, join=True)
    return root


@pytest.mark.parametrize("head", HEADS)
def test_two_processes_end_identical_and_equal_one_process(two_process_run, head, tmp_path):
    ranks = [torch.load(two_process_run / f"{head}_rank{r}.pt", weights_only=True) for r in range(2)]
    single = train(head, 1, tmp_path).state_dict()
    whole = torch.load(two_process_run / f"{head}_2.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for name, expected in single.items():
        if head == "partial_fc" and name == "head.weight":
            shards = torch.cat([ranks[0][name], ranks[1][name]])
            torch.testing.assert_close(shards, expected, rtol=1e-4, atol=1e-5, msg=name)
            assert torch.equal(whole[name], shards), "checkpoint holds the gathered centres"
            continue
        assert torch.equal(ranks[0][name], ranks[1][name]), f"ranks differ in {name}"
        torch.testing.assert_close(ranks[0][name], expected, rtol=1e-4, atol=1e-5, msg=name)
