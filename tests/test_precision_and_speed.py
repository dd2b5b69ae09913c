"""Precision, gradient clipping/accumulation, torch.compile and channels-last inputs on the CPU."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import smoke_model


@pytest.mark.parametrize("overrides", [("head=arcface",), ("head=cosface", "classifier=partial_fc")])
def test_heads_compute_the_loss_in_float32_under_bf16_autocast(overrides):
    model = smoke_model(*overrides)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embeddings = model(images)
        output = model.head(embeddings, labels)
    assert embeddings.dtype == torch.bfloat16
    assert output.loss.dtype == output.logits.dtype == torch.float32
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bf16_mixed_with_clipping_and_accumulation_trains(tmp_path):
    model = smoke_model("head=arcface")
    loader = DataLoader(TensorDataset(torch.randn(32, 3, 32, 32), torch.arange(32) % 4), batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", gradient_clip_val=1.0, accumulate_grad_batches=2, max_epochs=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 2  # 4 batches, 2 accumulated per optimizer step
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_compiled_backbone_gives_the_same_embeddings(monkeypatch):
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)  # compile here, not in a pool of processes
    torch.manual_seed(0)
    eager = smoke_model().eval()
    torch.manual_seed(0)
    compiled = smoke_model("model.compile=true").eval()
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(compiled(images), eager(images), rtol=1e-4, atol=1e-5)


def test_channels_last_backbone_also_converts_the_input():
    torch.manual_seed(0)
    model = smoke_model("backbone.channels_last=true").eval()
    seen = []
    first_conv = next(m for m in model.net.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    torch.manual_seed(0)
    reference = smoke_model().eval()
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(images), reference(images), rtol=1e-4, atol=1e-5)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
