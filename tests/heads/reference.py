"""Slow per-sample references written straight from the papers, plus shared test helpers.

References loop over samples (and classes) with scalar tensor ops, so autograd through them gives
reference gradients. Each returns ``(loss, logits)``: the batch-mean loss and the (B, C) logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.heads import Head, Softmax, create_head

Row = list[Tensor]


def unit(v: Tensor) -> Tensor:
    """``v / ‖v‖`` for a single vector."""
    return v / torch.sqrt((v * v).sum())


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between two vectors."""
    return (unit(a) * unit(b)).sum()


def cross_entropy(row: Row, label: int) -> Tensor:
    """``log Σ_j exp(z_j) − z_y`` for one sample's logits."""
    return torch.logsumexp(torch.stack(row), dim=0) - row[label]


def finish(rows: list[Row], labels: Tensor, extra: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Mean of per-sample CE (+ per-sample extra terms) and the stacked (B, C) logits."""
    losses = [cross_entropy(row, int(y)) for row, y in zip(rows, labels, strict=True)]
    if extra is not None:
        losses = [loss + e for loss, e in zip(losses, extra, strict=True)]
    return torch.stack(losses).mean(), torch.stack([torch.stack(row) for row in rows])


def margin_rows(x: Tensor, labels: Tensor, weight: Tensor, scale: float, target: Callable) -> list[Row]:
    """Per-sample logits ``s·cos θ_j`` with ``target(cos θ_y, i)`` replacing the target's cosine."""
    rows = []
    for i in range(x.shape[0]):
        y = int(labels[i])
        row = [cosine(x[i], weight[j]) for j in range(weight.shape[0])]
        row[y] = target(row[y], i)
        rows.append([scale * z for z in row])
    return rows


def ref_softmax(x: Tensor, labels: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """``z_j = x·w_j + b_j``, CE."""
    rows = []
    for i in range(x.shape[0]):
        row = []
        for j in range(weight.shape[0]):
            z = (x[i] * weight[j]).sum()
            row.append(z if bias is None else z + bias[j])
        rows.append(row)
    return finish(rows, labels)


def center_terms(features: Tensor, labels: Tensor, centers: Tensor, center_weight: float) -> list[Tensor]:
    """Per-sample ``λ·½·‖f_i − c_{y_i}‖²``."""
    terms = []
    for i in range(features.shape[0]):
        d = features[i] - centers[int(labels[i])]
        terms.append(center_weight * 0.5 * (d * d).sum())
    return terms


def ref_center(x, labels, weight, bias, centers, center_weight) -> tuple[Tensor, Tensor]:
    """Softmax CE + ``λ·½·‖x_i − c_{y_i}‖²``, averaged."""
    rows = [[(x[i] * weight[j]).sum() + bias[j] for j in range(weight.shape[0])] for i in range(x.shape[0])]
    return finish(rows, labels, center_terms(x, labels, centers, center_weight))


def ref_cosface(x, labels, weight, scale, margin) -> tuple[Tensor, Tensor]:
    """Target logit ``s·(cos θ_y − m)``."""
    return finish(margin_rows(x, labels, weight, scale, lambda c, i: c - margin), labels)


def arcface_target(c: Tensor, margin: float, easy_margin: bool) -> Tensor:
    """``cos(θ + m)`` via ``acos``; fallback ``cos θ − m·sin m`` where ``θ + m > π``."""
    theta = torch.acos(c)
    if easy_margin:
        return torch.cos(theta + margin) if c > 0 else c
    if theta + margin > math.pi:
        return c - margin * math.sin(margin)
    return torch.cos(theta + margin)


def ref_arcface(x, labels, weight, scale, margin, easy_margin=False) -> tuple[Tensor, Tensor]:
    """Target logit ``s·cos(θ_y + m)`` (ArcFace)."""
    rows = margin_rows(x, labels, weight, scale, lambda c, i: arcface_target(c, margin, easy_margin))
    return finish(rows, labels)


def ref_arcface_center(x, labels, weight, scale, margin, centers, center_weight, center_on):
    """ArcFace CE + ``λ·½·‖f_i − c_{y_i}‖²`` with ``f = x/‖x‖`` or ``f = x``."""
    rows = margin_rows(x, labels, weight, scale, lambda c, i: arcface_target(c, margin, False))
    features = torch.stack([unit(v) for v in x]) if center_on == "normalized" else x
    return finish(rows, labels, center_terms(features, labels, centers, center_weight))


def ref_combined(x, labels, weight, scale, m1, m2, m3) -> tuple[Tensor, Tensor]:
    """``cos(m1·θ + m2) − m3``; past ``θ_max`` the documented ``cos θ − m3 − p``."""
    theta_max = (math.pi - m2) / m1
    penalty = max(m2 * math.sin(m2), 1.0 + math.cos(min(theta_max, math.pi)))

    def target(c: Tensor, i: int) -> Tensor:
        theta = torch.acos(c)
        if m1 * theta + m2 > math.pi:
            return c - m3 - penalty
        return torch.cos(m1 * theta + m2) - m3

    return finish(margin_rows(x, labels, weight, scale, target), labels)


def ref_subcenter_arcface(x, labels, weight, scale, margin, subcenters) -> tuple[Tensor, Tensor]:
    """ArcFace on ``max_k cos(x, w_{j,k})``; ``weight`` is (C·K, E)."""
    rows = []
    for i in range(x.shape[0]):
        y = int(labels[i])
        row = []
        for j in range(weight.shape[0] // subcenters):
            row.append(max(cosine(x[i], weight[j * subcenters + k]) for k in range(subcenters)))
        row[y] = arcface_target(row[y], margin, False)
        rows.append([scale * z for z in row])
    return finish(rows, labels)


def ref_adaface(x, labels, weight, scale, margin, h, momentum, eps, mean0, std0) -> tuple[Tensor, Tensor]:
    """AdaFace (training mode): EMA of the clipped-norm batch stats, ẑ, g_angle, g_add."""
    norms = [min(max(float(torch.sqrt((v * v).sum()).detach()), 1e-3), 100.0) for v in x]
    n = len(norms)
    batch_mean = sum(norms) / n
    batch_std = math.sqrt(sum((v - batch_mean) ** 2 for v in norms) / (n - 1))
    mean = (1 - momentum) * mean0 + momentum * batch_mean
    std = (1 - momentum) * std0 + momentum * batch_std

    def target(c: Tensor, i: int) -> Tensor:
        z = min(max((norms[i] - mean) / (std + eps) * h, -1.0), 1.0)
        theta = torch.clamp(torch.acos(c) - margin * z, eps, math.pi - eps)
        return torch.cos(theta) - (margin * z + margin)

    return finish(margin_rows(x, labels, weight, scale, target), labels)


def spread_batch(weight: Tensor, labels: Tensor, seed: int = 0) -> Tensor:
    """(B, E) embeddings from almost along to almost opposite their class row of ``weight``."""
    g = torch.Generator().manual_seed(seed)
    coef = torch.linspace(-3.0, 3.0, labels.shape[0], dtype=weight.dtype)
    noise = torch.randn(labels.shape[0], weight.shape[1], generator=g, dtype=weight.dtype)
    return coef[:, None] * F.normalize(weight[labels], dim=1) + 0.5 * noise


def assert_matches(
    head: nn.Module,
    reference: Callable[[Tensor], tuple[Tensor, Tensor]],
    embeddings: Tensor,
    labels: Tensor,
    params: list[Tensor],
) -> None:
    """Loss, logits and grads w.r.t. embeddings and ``params`` of head vs reference, to 1e-9.

    ``reference(x)`` runs first (heads with running statistics update them in ``head``'s forward).
    """
    x_ref = embeddings.clone().requires_grad_()
    ref_loss, ref_logits = reference(x_ref)
    ref_grads = torch.autograd.grad(ref_loss, [x_ref, *params])
    x = embeddings.clone().requires_grad_()
    out = head(x, labels)
    grads = torch.autograd.grad(out.loss, [x, *params])
    tol = {"rtol": 1e-9, "atol": 1e-9}
    torch.testing.assert_close(out.loss, ref_loss, **tol)
    torch.testing.assert_close(out.logits, ref_logits, **tol)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, **tol)


def class_scores(head: Head, embeddings: Tensor) -> Tensor:
    """(B, C) scores without margin: cosines (max over sub-centres), or the linear logits of a softmax head."""
    inputs = head.classifier(embeddings, torch.zeros(len(embeddings), dtype=torch.long, device=embeddings.device))
    return head.margin(inputs) if isinstance(head.margin, Softmax) else inputs.cos


def train_separable(head: Head, steps: int = 200, seed: int = 0) -> tuple[float, float, float]:
    """Trains a linear layer + ``head`` on 4 separable 8-D clusters (64 samples, full batch).

    Uses the head's ``param_groups`` and ``before_optimizer_step``/``after_optimizer_step`` hooks like the
    training module.

    Returns:
        First loss, last loss and final train accuracy.
    """
    torch.manual_seed(seed)
    num_classes, dim = 4, 8
    labels = torch.arange(64) % num_classes
    means = 3.0 * F.normalize(torch.randn(num_classes, dim), dim=1)
    data = means[labels] + 0.3 * torch.randn(64, dim)
    net = nn.Linear(dim, dim)
    optimizer = torch.optim.SGD([{"params": list(net.parameters())}, *head.param_groups()], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = head(net(data), labels).loss
        optimizer.zero_grad()
        loss.backward()
        head.before_optimizer_step(optimizer)
        optimizer.step()
        head.after_optimizer_step()
        losses.append(loss.item())
    with torch.no_grad():
        accuracy = (class_scores(head, net(data)).argmax(dim=1) == labels).float().mean().item()
    return losses[0], losses[-1], accuracy


def assert_trains(head: Head) -> None:
    """200 steps on a separable problem reduce the loss and reach > 95% train accuracy."""
    first, last, accuracy = train_separable(head)
    assert last < first, (first, last)
    assert accuracy > 0.95, accuracy


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
