"""Shared mixed-precision check (s = 64): finite loss and gradients, loss close to float32."""

import pytest
import torch
from torch import nn

from facerec.heads import create_head


def assert_autocast_close(name: str) -> None:
    """bf16 autocast on CPU and, if a GPU is present, fp16 autocast on CUDA."""
    cases = [("cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        cases.append(("cuda", torch.float16))
    for device, dtype in cases:
        torch.manual_seed(0)
        net = nn.Linear(16, 16).to(device)
        head = create_head(name, 16, 10, scale=64.0).to(device)
        data = torch.randn(8, 16, device=device)
        labels = torch.arange(8, device=device)
        reference = head(net(data), labels).loss.item()
        with torch.autocast(device_type=device, dtype=dtype):
            embeddings = net(data)
            assert embeddings.dtype == dtype
            loss = head(embeddings, labels).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert loss.dtype == torch.float32
        for p in [*net.parameters(), *head.parameters()]:
            assert torch.isfinite(p.grad).all()
        assert loss.item() == pytest.approx(reference, rel=1e-2)
