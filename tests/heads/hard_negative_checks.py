"""Shared checks of the hard-negative margin tests (CurricularFace, MV-Softmax, NPCFace).

Scalar helpers for the per-sample float64 references, and the checks every such head gets: against its
reference over steps, Partial FC (r = 1 exact in one process and on 2 gloo ranks; r = 0.5 equal to the
sampled sub-problem), low-precision inputs. A reference is ``reference(x, labels, weight, state) ->
(loss, logits, state)``: ``state`` is the margin's running state before the step (``None`` without one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from facerec.heads import Head, create_head

TOL = {"rtol": 1e-12, "atol": 1e-12}
E, C, B = 8, 6, 8
Reference = Callable[[Tensor, Tensor, Tensor, Any], tuple[Tensor, Tensor, Any]]


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between two vectors, from sums of scalar products."""
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum())


def cosine_table(x: Tensor, weight: Tensor) -> list[list[Tensor]]:
    """``[i][j]`` = cos θ between sample i and centre j, one scalar each."""
    return [[cosine(x[i], weight[j]) for j in range(weight.shape[0])] for i in range(x.shape[0])]


def arc(c: Tensor, margin: float | Tensor) -> Tensor:
    """ArcFace's target via ``acos``: ``cos(θ + m)``, or ``cos θ − m·sin m`` where ``θ + m > π``."""
    theta = torch.acos(c)
    if theta + margin > math.pi:
        return c - margin * math.sin(float(margin))
    return torch.cos(theta + margin)


def finish(rows: list[list[Tensor]], labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over samples of ``log Σ_j exp(z_j) − z_y``, and the (B, C) logits."""
    losses = [torch.logsumexp(torch.stack(row), 0) - row[int(y)] for row, y in zip(rows, labels, strict=True)]
    return torch.stack(losses).mean(), torch.stack([torch.stack(row) for row in rows])


def batch(seed: int = 0, num_classes: int = C, size: int = B) -> tuple[Tensor, Tensor, Tensor]:
    """float64 centres (C, E), embeddings (B, E) and labels (B,): samples from near their centre to far past it."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_classes, E, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (size,), generator=generator)
    along = torch.linspace(-5.0, 3.0, size, dtype=torch.float64).unsqueeze(1)
    x = along * weight[labels] / weight[labels].norm(dim=1, keepdim=True)
    return weight, x + 0.6 * torch.randn(size, E, generator=generator, dtype=torch.float64), labels


def double_head(name: str, weight: Tensor, classifier: dict | None = None, **margin: Any) -> Head:
    """A float64 head of margin ``name`` whose centres are ``weight`` (C, E) (its shard's rows under Partial FC)."""
    head = create_head(name, weight.shape[1], weight.shape[0], classifier=classifier, **margin).double()
    shard = slice(getattr(head.classifier, "class_start", 0), getattr(head.classifier, "class_end", None))
    with torch.no_grad():
        head.classifier.weight.copy_(weight[shard])
    return head


def step(head: Head, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Loss, logits and gradients w.r.t. the embeddings and the centres of one forward."""
    x = x.clone().requires_grad_()
    out = head(x, labels)
    grad_x, grad_w = torch.autograd.grad(out.loss, [x, head.classifier.weight])
    return out.loss.detach(), out.logits.detach(), grad_x, grad_w


def assert_matches_reference(
    head: Head, reference: Reference, state: Callable[[Head], Any], steps: int = 3, seed: int = 0
) -> None:
    """Over ``steps`` batches: loss, logits, gradients (embeddings, centres) and state equal the reference's."""
    expected_state = state(head)
    for k in range(steps):
        _, x, labels = batch(seed + k)
        weight = head.classifier.weight.detach().clone().requires_grad_()
        x_ref = x.clone().requires_grad_()
        ref_loss, ref_logits, expected_state = reference(x_ref, labels, weight, expected_state)
        ref_grads = torch.autograd.grad(ref_loss, [x_ref, weight])
        loss, logits, *grads = step(head, x, labels)
        torch.testing.assert_close(loss, ref_loss.detach(), **TOL)
        torch.testing.assert_close(logits, ref_logits.detach(), **TOL)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, **TOL)
        if expected_state is not None:
            torch.testing.assert_close(state(head), expected_state, **TOL)


def assert_partial_fc_full_rate_exact(name: str, **margin: Any) -> None:
    """``partial_fc`` at r = 1 in one process: loss, logits, gradients and state equal the full classifier's."""
    weight, x, labels = batch()
    full = double_head(name, weight, **margin)
    partial = double_head(name, weight, {"name": "partial_fc", "sample_rate": 1.0}, **margin)
    for _ in range(2):
        for got, want in zip(step(partial, x, labels), step(full, x, labels), strict=True):
            torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(partial.margin.state_dict(), full.margin.state_dict(), **TOL)


def assert_partial_fc_sampled(name: str, **margin: Any) -> None:
    """``partial_fc`` at r = 0.5 (12 classes, 3 in the batch): finite, and equal to the full head of the
    classes it sampled (labels renumbered), state included."""
    weight, x, labels = batch(num_classes=12)
    labels = labels % 3
    partial = double_head(name, weight, {"name": "partial_fc", "sample_rate": 0.5}, **margin)
    x = x.clone().requires_grad_()
    out = partial(x, labels)
    out.loss.backward()
    sampled = partial.classifier.sampled
    assert torch.isfinite(out.loss) and torch.isfinite(x.grad).all() and torch.isfinite(sampled.param.grad).all()
    classes = sampled.rows.sort().values
    sub = double_head(name, weight[classes], **margin)
    sub_loss, sub_logits, sub_grad_x, _ = step(sub, x.detach(), torch.searchsorted(classes, labels))
    torch.testing.assert_close(out.loss.detach(), sub_loss, **TOL)
    torch.testing.assert_close(out.logits.detach(), sub_logits, **TOL)
    torch.testing.assert_close(x.grad, sub_grad_x, **TOL)
    torch.testing.assert_close(partial.margin.state_dict(), sub.margin.state_dict(), **TOL)


def assert_finite_at_parallel_and_opposite(name: str, **margin: Any) -> None:
    """Embeddings along, opposite and orthogonal to their centre (cos θ_y = ±1, 0): finite loss and gradients."""
    for dtype in (torch.float32, torch.float64):
        head = create_head(name, 2, 2, **margin).to(dtype)
        with torch.no_grad():
            head.classifier.weight.copy_(torch.eye(2))
        x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [30.0, 0.0], [0.0, 1.0]], dtype=dtype, requires_grad=True)
        loss = head(x, torch.zeros(4, dtype=torch.long)).loss
        loss.backward()
        assert (
            torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(head.classifier.weight.grad).all()
        )
