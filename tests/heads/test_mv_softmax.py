"""MV-Softmax margin (``mv_am``, ``mv_arc`` heads): a per-sample float64 reference, a hand-worked example, Partial FC.

Reference: FaceX-Zoo ``head/MV_Softmax.py`` and the authors' ``SV-X-Softmax/fc_layers.py``: a negative is
mis-classified where ``cos θ_j > f(θ_y)`` (``f = cos θ − m`` for AM; for Arc the mask uses ``cos(θ_y + m)``)
and becomes ``t·cos θ_j + t − 1``; the target becomes ``f(θ_y)``.

Deviations from FaceX-Zoo, following the paper (Wang et al., AAAI 2020, Eq. 5-8, ``f(m, θ) = cos θ − m`` or
``cos(θ + m)`` for every sample): FaceX-Zoo keeps the target cosine without margin where ``cos θ_y ≤ m``
(AM) or ``cos θ_y ≤ 0`` (Arc), i.e. the authors' ``easy_margin=True`` branch; here the margin applies to
every target (the authors' ``easy_margin=False`` branch). Past ``θ_y = π − m`` the Arc target is ArcFace's
monotonic fallback ``cos θ_y − m·sin m`` (as the ``arcface`` margin), where the paper's ``cos(θ_y + m)``
would increase again with θ_y; the mask still compares with ``cos(θ_y + m)``, as the authors' code.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from facerec.heads import build_head, create_head
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

SCALE, MARGIN, T = 30.0, 0.35, 1.3


def reference(base: str):
    """The per-sample reference for base ``am`` or ``arc`` (no running state)."""

    def run(x, labels, weight, state: None):
        cos = cosine_table(x, weight)
        rows = []
        for i, y in enumerate(labels.tolist()):
            c_y = cos[i][y]
            if base == "am":
                threshold, target = c_y - MARGIN, c_y - MARGIN
            else:
                threshold, target = torch.cos(torch.acos(c_y) + MARGIN), arc(c_y, MARGIN)
            row = []
            for j, c in enumerate(cos[i]):
                if j == y:
                    row.append(SCALE * target)
                elif c > threshold:
                    row.append(SCALE * (T * c + T - 1.0))
                else:
                    row.append(SCALE * c)
            rows.append(row)
        return (*finish(rows, labels), None)

    return run


def test_defaults() -> None:
    margin = create_head("mv_softmax", 4, 3).margin
    assert (margin.scale, margin.margin, margin.t, margin.base) == (32.0, 0.35, 1.2, "am")


@pytest.mark.parametrize("base", ["am", "arc"])
def test_matches_reference(base: str) -> None:
    """Loss, logits and gradients (embeddings, centres) on 3 batches (hard/easy negatives, targets past π − m)."""
    head = double_head("mv_softmax", batch()[0], scale=SCALE, margin=MARGIN, t=T, base=base)
    assert_matches_reference(head, reference(base), lambda h: None)


@pytest.mark.parametrize("base", ["am", "arc"])
def test_hand_worked_example(base: str) -> None:
    """2-D; sample 0 at 40° from its class (0°): 50° from class 1, 140° from class 2; sample 1 at 70° from class 0.

    Sample 0: 50° is mis-classified (cos 50° = 0.643 > cos 40° − 0.35 = 0.416, and > cos(40° + 0.35 rad) = 0.485):
    ``t·cos 50° + t − 1``. Sample 1 (cos 70° = 0.342 < m = 0.35, where FaceX-Zoo would skip the AM margin):
    target ``cos 70° − 0.35`` (AM) or ``cos(70° + 0.35 rad)`` (Arc); class 1 at 20° is mis-classified too,
    class 2 at 110° is not.
    """
    head = double_head("mv_softmax", torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), base=base)
    a, b = math.radians(40), math.radians(70)
    x = torch.tensor([[math.cos(a), math.sin(a)], [math.cos(b), math.sin(b)]], dtype=torch.float64)
    logits = head(x, torch.tensor([0, 0])).logits

    def f(theta: float) -> float:
        return math.cos(theta) - 0.35 if base == "am" else math.cos(theta + 0.35)

    def mv(c: float) -> float:
        return 1.2 * c + 0.2

    expected = [
        [f(a), mv(math.cos(math.radians(50))), math.cos(math.radians(140))],
        [f(b), mv(math.cos(math.radians(20))), math.cos(math.radians(110))],
    ]
    torch.testing.assert_close(logits, 32.0 * torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("base", ["am", "arc"])
def test_partial_fc_full_rate_exact(base: str) -> None:
    assert_partial_fc_full_rate_exact("mv_softmax", base=base)


@pytest.mark.parametrize("base", ["am", "arc"])
def test_partial_fc_sampled(base: str) -> None:
    assert_partial_fc_sampled("mv_softmax", base=base)


@pytest.mark.parametrize("base", ["am", "arc"])
def test_finite_at_parallel_and_opposite(base: str) -> None:
    assert_finite_at_parallel_and_opposite("mv_softmax", base=base)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"base": "sphere"}, "base"),
        ({"scale": -1.0}, "scale"),
        ({"margin": 1.0}, "margin"),
        ({"margin": 1.6, "base": "arc"}, "margin"),
        ({"margin": -0.1}, "margin"),
        ({"t": 0.9}, "t"),
    ],
)
def test_bad_values(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"head\.margin\.{name}="):
        create_head("mv_softmax", 4, 3, **params)


@pytest.mark.parametrize(("head_name", "base"), [("mv_am", "am"), ("mv_arc", "arc")])
def test_head_configs_select_the_base(head_name: str, base: str) -> None:
    """``conf/head/mv_am.yaml`` and ``mv_arc.yaml`` compose the one ``mv_softmax`` margin with their base."""
    with initialize_config_dir(config_dir=str(Path(__file__).parents[2] / "conf"), version_base=None):
        config = compose("train", overrides=[f"head={head_name}"])
    margin = build_head(config.head, 4, 3).margin
    assert (type(margin).__name__, margin.base) == ("MVSoftmax", base)
