"""Every conf/head head takes float16 and bfloat16 embeddings: its math runs in float32, finite, as on float32 input."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from omegaconf import OmegaConf

from facerec.heads import Head, build_head
from tests.helpers import compose_config, registered_heads

E, C, B = 16, 12, 8


@functools.cache
def head_config(name: str) -> dict:
    """``train.py head=<name>``'s head config (``classifier=full``)."""
    return OmegaConf.to_container(compose_config(f"head={name}").head, resolve=True)


def conf_head(name: str) -> Head:
    """The head of :func:`head_config` with E = 16, C = 12."""
    return build_head(copy.deepcopy(head_config(name)), embedding_size=E, num_classes=C)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", registered_heads())
def test_half_precision_embeddings_give_the_float32_loss(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    head = conf_head(name)
    twin = copy.deepcopy(head)  # the same running state (AdaCos' scale, ElasticFace's draws, ...)
    labels = torch.arange(B) % C
    x = (10.0 * torch.randn(B, E)).to(dtype).requires_grad_(True)
    loss = head(x, labels).loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and all(
        torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None
    )
    torch.testing.assert_close(loss, twin(x.detach().float(), labels).loss, rtol=1e-6, atol=1e-6)
