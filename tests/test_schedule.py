"""The per-step learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from facerec.module.schedule import WarmupDecay


def test_linear_warmup_then_cosine_to_zero():
    factor = WarmupDecay(total_steps=110, steps_per_epoch=10, warmup_epochs=1)
    assert [factor(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5)
    assert factor(110) == pytest.approx(0.0)


def test_polynomial_decay_with_floor():
    factor = WarmupDecay(total_steps=100, steps_per_epoch=10, decay="poly", power=2, min_lr_ratio=0.1)
    assert factor(0) == pytest.approx(1.0)
    assert factor(50) == pytest.approx(0.1 + 0.9 * 0.25)
    assert factor(100) == pytest.approx(0.1)


def test_cosine_midpoint_without_warmup():
    factor = WarmupDecay(total_steps=4, steps_per_epoch=4)
    assert factor(2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_unknown_decay_is_rejected():
    with pytest.raises(ValueError, match="unknown decay 'linear'; choose cosine, poly, step"):
        WarmupDecay(total_steps=10, steps_per_epoch=1, decay="linear")


def test_step_decay_in_steps_as_the_arcface_casia_schedule():
    # ArcFace (Deng et al. 2019, Sec. 3.1) on CASIA: LR 0.1, divided by 10 at 20k and 28k of 32k iterations.
    factor = WarmupDecay(
        total_steps=32_000, steps_per_epoch=958, decay="step", milestones=[20_000, 28_000], milestone_unit="step"
    )
    assert [factor(s) for s in (0, 19_999, 20_000, 27_999, 28_000, 31_999)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_step_decay_in_epochs_after_warmup_with_floor():
    factor = WarmupDecay(
        total_steps=100, steps_per_epoch=10, warmup_epochs=1, decay="step", milestones=[2.5, 5, 8], gamma=0.5,
        min_lr_ratio=0.2,
    )  # fmt: skip
    assert factor.milestone_steps == [25, 50, 80]
    assert [factor(s) for s in (0, 9, 10, 24, 25, 49, 50, 79, 80, 99)] == pytest.approx(
        [0.1, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2]
    )


def test_step_decay_drives_a_torch_scheduler():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    factor = WarmupDecay(total_steps=6, steps_per_epoch=2, decay="step", milestones=[1, 2])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"decay": "cosine", "milestones": [1]}, r"milestones \[1.0\] need decay=step"),
        ({"decay": "step", "milestones": [2, 1]}, "non-negative and increasing"),
        ({"decay": "step", "milestones": [-1]}, "non-negative and increasing"),
        ({"decay": "step", "milestones": [1], "milestone_unit": "iter"}, "unknown milestone_unit 'iter'"),
        ({"decay": "step", "milestones": [1], "gamma": 0.0}, "gamma must be in"),
    ],
)
def test_step_decay_rejects_bad_milestones(options, message):
    with pytest.raises(ValueError, match=message):
        WarmupDecay(total_steps=10, steps_per_epoch=1, **options)
