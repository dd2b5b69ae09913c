"""Combined margin head: reference, special cases, monotonic fallback, edge angles, training."""

import math

import pytest
import torch

from facerec.heads import create_head
from tests.heads.reference import assert_matches, assert_trains, ref_combined, spread_batch

COMBINATIONS = [
    (1.0, 0.3, 0.2),
    (2.0, 0.0, 0.0),
    (1.0, 0.5, 0.0),
    (1.0, 0.0, 0.35),
    (1.35, 0.25, 0.1),
    (0.8, 0.2, 0.1),
]


def test_defaults() -> None:
    margin = create_head("combined", 8, 5).margin
    assert (margin.scale, margin.m1, margin.m2, margin.m3) == (64.0, 1.0, 0.3, 0.2)


@pytest.mark.parametrize(("m1", "m2", "m3"), COMBINATIONS)
def test_matches_reference(m1: float, m2: float, m3: float) -> None:
    torch.manual_seed(0)
    head = create_head("combined", 8, 5, scale=30.0, m1=m1, m2=m2, m3=m3).double()
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    assert_matches(
        head,
        lambda x: ref_combined(x, labels, head.weight, 30.0, m1, m2, m3),
        spread_batch(head.weight.detach(), labels),
        labels,
        [head.classifier.weight],
    )


@pytest.mark.parametrize(("name", "kwargs", "combined"), [
    ("arcface", {"margin": 0.5}, {"m1": 1.0, "m2": 0.5, "m3": 0.0}),
    ("cosface", {"margin": 0.35}, {"m1": 1.0, "m2": 0.0, "m3": 0.35}),
])  # fmt: skip
def test_special_cases(name: str, kwargs: dict, combined: dict) -> None:
    cos = torch.cos(torch.linspace(0, math.pi, 1001, dtype=torch.float64))[1:-1]
    norms = torch.ones_like(cos)
    special = create_head(name, 2, 2, **kwargs).margin.target_logit(cos, norms)
    general = create_head("combined", 2, 2, **combined).margin.target_logit(cos, norms)
    torch.testing.assert_close(general, special, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m1", [0.5, 1.0, 1.5, 2.0, 4.0])
@pytest.mark.parametrize("m2", [0.0, 0.5, 1.5, 3.0])
def test_target_logit_monotonic(m1: float, m2: float) -> None:
    head = create_head("combined", 2, 2, m1=m1, m2=m2, m3=0.2).double()
    cos = torch.cos(torch.linspace(0, math.pi, 4001, dtype=torch.float64))
    assert (head.margin.target_logit(cos, torch.ones_like(cos)).diff() <= 1e-12).all()


@pytest.mark.parametrize("kwargs", [{"m1": 0.0}, {"m2": -0.1}, {"m2": math.pi}])
def test_invalid(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=rf"head\.margin\.{next(iter(kwargs))}=.* is outside"):
        create_head("combined", 2, 2, **kwargs)


@pytest.mark.parametrize(("m1", "m2", "m3"), COMBINATIONS)
def test_finite_at_parallel_and_opposite(m1: float, m2: float, m3: float) -> None:
    head = create_head("combined", 2, 2, m1=m1, m2=m2, m3=m3)
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss = head(x, torch.tensor([0, 0])).loss
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(head.classifier.weight.grad).all()


@pytest.mark.parametrize(("m1", "m2", "m3"), [(1.0, 0.3, 0.2), (2.0, 0.0, 0.0)])
def test_trains(m1: float, m2: float, m3: float) -> None:
    assert_trains(create_head("combined", 8, 4, m1=m1, m2=m2, m3=m3))
