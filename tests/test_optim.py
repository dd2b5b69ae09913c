"""The per-step learning-rate schedule."""

from __future__ import annotations

import math

import pytest

from facerec.optim import WarmupDecay


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
    with pytest.raises(ValueError, match="unknown decay 'step'"):
        WarmupDecay(total_steps=10, steps_per_epoch=1, decay="step")
