"""CurricularFace margin: a per-sample float64 reference of the authors' math, its ``t`` over steps, Partial FC.

Reference: HuangYG123/CurricularFace ``head/metrics.py`` (and TFace's copy): target ``cos(θ_y + m)`` with
ArcFace's fallback ``cos θ_y − m·sin m`` past ``π − m``; a negative is hard where ``cos θ_j > cos(θ_y + m)``
and becomes ``cos θ_j·(t + cos θ_j)``; ``t ← 0.99·t + 0.01·mean_i cos θ_{y_i}`` on each batch, before use.
One difference: the reference also updates ``t`` in eval mode (a validation loss would move it); here eval
keeps it, as AdaFace's statistics.
"""

from __future__ import annotations

import math

import pytest
import torch

from facerec.heads import create_head
from facerec.heads.margins.hard_negative import arc_target
from tests.heads.hard_negative_checks import (
    arc,
    assert_finite_at_parallel_and_opposite,
    assert_matches_reference,
    assert_partial_fc_full_rate_exact,
    assert_partial_fc_sampled,
    batch,
    cosine_table,
    double_head,
    finish,
)

SCALE, MARGIN, MOMENTUM = 30.0, 0.5, 0.3


def reference(x, labels, weight, t_before: torch.Tensor):
    """Per-sample logits and loss; ``t`` updated from the batch's mean target cosine before use."""
    cos = cosine_table(x, weight)
    targets = [cos[i][int(y)] for i, y in enumerate(labels)]
    t = (1 - MOMENTUM) * t_before + MOMENTUM * sum(c.detach() for c in targets) / len(targets)
    rows = []
    for i, y in enumerate(labels.tolist()):
        threshold = torch.cos(torch.acos(targets[i]) + MARGIN)
        row = []
        for j, c in enumerate(cos[i]):
            if j == y:
                row.append(SCALE * arc(c, MARGIN))
            elif c > threshold:
                row.append(SCALE * c * (t + c))
            else:
                row.append(SCALE * c)
        rows.append(row)
    return (*finish(rows, labels), t)


def test_defaults() -> None:
    margin = create_head("curricularface", 4, 3).margin
    assert (margin.scale, margin.margin, margin.momentum, margin.t.item()) == (64.0, 0.5, 0.01, 0.0)


def test_batch_covers_every_branch() -> None:
    """Each test batch holds hard and easy negatives, and targets past π − m (the fallback) and below 0."""
    for seed in range(3):
        weight, x, labels = batch(seed)
        cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(weight, dim=1).T
        target = cos.gather(1, labels[:, None])
        hard = (cos > torch.cos(torch.acos(target) + MARGIN)).sum() - len(labels)
        assert 0 < hard < cos.numel() - len(labels)
        assert (target < math.cos(math.pi - MARGIN)).any() and (target > 0).any()


def test_matches_reference_over_steps() -> None:
    """Loss, logits, gradients (embeddings, centres) and ``t`` after each of 3 steps, from t = 0.2."""
    weight, _, _ = batch()
    head = double_head("curricularface", weight, scale=SCALE, margin=MARGIN, momentum=MOMENTUM)
    head.margin.t.fill_(0.2)
    assert_matches_reference(head, reference, lambda h: h.margin.t.clone())


def test_hand_worked_example() -> None:
    """2-D, one sample at 40° from its class (0°), 50° from class 1, 140° from class 2; m = 0.5, t from 0.

    t = 0.3·cos 40°; 50° < 40° + 0.5 rad (68.6°), so class 1 is hard: cos 50°·(t + cos 50°).
    """
    head = double_head("curricularface", torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), momentum=0.3)
    a = math.radians(40)
    logits = head(torch.tensor([[math.cos(a), math.sin(a)]], dtype=torch.float64), torch.tensor([0])).logits
    t = 0.3 * math.cos(a)
    c1 = math.cos(math.radians(50))
    expected = [math.cos(a + 0.5), c1 * (t + c1), math.cos(math.radians(140))]
    torch.testing.assert_close(logits, 64.0 * torch.tensor([expected], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(head.margin.t.item(), t, rtol=1e-12, atol=1e-12)


def test_target_is_arcfaces() -> None:
    """The target logit (shared with mv_arc and npcface) equals the ``arcface`` margin's, fallback included."""
    cos = torch.cos(torch.linspace(0, math.pi, 1001, dtype=torch.float64))
    arcface = create_head("arcface", 2, 2, margin=MARGIN).margin
    torch.testing.assert_close(arc_target(cos, MARGIN), arcface.target_logit(cos, torch.ones_like(cos)))


def test_eval_keeps_t() -> None:
    head = create_head("curricularface", 4, 3).eval()
    head(torch.randn(2, 4), torch.tensor([0, 1]))
    assert head.margin.t.item() == 0.0


def test_partial_fc_full_rate_exact() -> None:
    assert_partial_fc_full_rate_exact("curricularface", momentum=MOMENTUM)


def test_partial_fc_sampled() -> None:
    assert_partial_fc_sampled("curricularface", momentum=MOMENTUM)


def test_finite_at_parallel_and_opposite() -> None:
    assert_finite_at_parallel_and_opposite("curricularface")


@pytest.mark.parametrize(
    ("param", "value"), [("scale", 0.0), ("margin", -0.1), ("margin", 1.6), ("momentum", 0.0), ("momentum", 1.5)]
)
def test_bad_values(param: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"head\.margin\.{param}="):
        create_head("curricularface", 4, 3, **{param: value})
