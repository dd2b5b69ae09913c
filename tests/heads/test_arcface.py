"""ArcFace head: reference loss/gradients, edge angles, autocast and training."""

import math

import pytest
import torch

from facerec.heads import create_head
from tests.heads.reference import (
    arcface_target,
    assert_autocast_close,
    assert_matches,
    assert_trains,
    ref_arcface,
    spread_batch,
)


def test_defaults() -> None:
    margin = create_head("arcface", 8, 5).margin
    assert (margin.scale, margin.margin, margin.easy_margin) == (64.0, 0.5, False)


@pytest.mark.parametrize("easy_margin", [False, True])
def test_matches_reference(easy_margin: bool) -> None:
    torch.manual_seed(0)
    head = create_head("arcface", 8, 5, scale=30.0, margin=0.5, easy_margin=easy_margin).double()
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    embeddings = spread_batch(head.weight.detach(), labels)
    angles = torch.acos(torch.cosine_similarity(embeddings, head.weight.detach()[labels]))
    assert (angles > math.pi - 0.5).any() and (angles < math.pi / 2).any()
    assert_matches(
        head,
        lambda x: ref_arcface(x, labels, head.weight, 30.0, 0.5, easy_margin),
        embeddings,
        labels,
        [head.classifier.weight],
    )


def at_angle(theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D weight (2, 2) with class 0 along x, and one embedding at angle θ from it."""
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    embedding = torch.tensor([[math.cos(theta), math.sin(theta)]], dtype=dtype)
    return weight, embedding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("theta", [0.0, 1e-4, math.pi - 0.5 - 1e-4, math.pi - 0.5 + 1e-4, math.pi - 1e-4, math.pi])
def test_edge_angles(theta: float, dtype: torch.dtype) -> None:
    head = create_head("arcface", 2, 2, margin=0.5).to(dtype)
    weight, embedding = at_angle(theta, dtype)
    with torch.no_grad():
        head.classifier.weight.copy_(weight)
    x = embedding.clone().requires_grad_()
    out = head(x, torch.tensor([0]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.classifier.weight.grad).all()
    cos = torch.tensor(math.cos(theta), dtype=torch.float64).clamp(-1 + 1e-15, 1 - 1e-15)
    expected = 64.0 * arcface_target(cos, 0.5, False).item()
    assert out.logits[0, 0].item() == pytest.approx(expected, abs=1e-2 if dtype == torch.float32 else 1e-4)


def test_target_logit_monotonic() -> None:
    head = create_head("arcface", 2, 2).double()
    cos = torch.cos(torch.linspace(0, math.pi, 2001, dtype=torch.float64))
    target = head.margin.target_logit(cos, torch.ones_like(cos))
    assert (target.diff() <= 0).all()


def test_autocast() -> None:
    assert_autocast_close("arcface")


def test_trains() -> None:
    assert_trains(create_head("arcface", 8, 4))
