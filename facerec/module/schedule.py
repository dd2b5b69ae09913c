"""Learning-rate schedules stepped per optimizer step."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence

DECAYS = ("cosine", "poly", "step")
MILESTONE_UNITS = ("epoch", "step")
LEGACY_SCHEDULE = "facerec.optim.WarmupDecay"
"""Alternative ``_target_`` some checkpoints hold for :class:`WarmupDecay`; loaded as it."""


class WarmupDecay:
    """LR multiplier for ``LambdaLR``, called per optimizer step (0-based): linear warmup, then decay.

    ``cosine``/``poly`` go from 1 to ``min_lr_ratio`` after warmup; ``step`` gives ``max(gamma**k, min_lr_ratio)``
    after the k-th milestone (ArcFace CASIA: ``milestones=[20000, 28000], milestone_unit="step"``).

    Args:
        total_steps: Optimizer steps of the run.
        steps_per_epoch: Converts epochs to steps.
        warmup_epochs: Warmup length (fractions allowed).
        decay: ``cosine``, ``poly`` or ``step``.
        power: ``poly`` exponent (insightface: 2).
        min_lr_ratio: Final LR fraction (``step``: floor).
        milestones: ``step`` only: increasing, in ``milestone_unit`` (``epoch``, fractional, or ``step``).
        milestone_unit: ``epoch`` or ``step``.
        gamma: ``step`` only: factor per milestone, in (0, 1].

    Raises:
        ValueError: Unknown ``decay``/``milestone_unit``, negative or non-increasing milestones, milestones
            without ``step`` decay, or ``gamma`` outside (0, 1].
    """

    def __init__(
        self,
        total_steps: int,
        steps_per_epoch: int,
        warmup_epochs: float = 0.0,
        decay: str = "cosine",
        power: float = 2.0,
        min_lr_ratio: float = 0.0,
        milestones: Sequence[float] = (),
        milestone_unit: str = "epoch",
        gamma: float = 0.1,
    ) -> None:
        if decay not in DECAYS:
            raise ValueError(f"unknown decay {decay!r}; choose {', '.join(DECAYS)}")
        if milestone_unit not in MILESTONE_UNITS:
            raise ValueError(f"unknown milestone_unit {milestone_unit!r}; choose {' or '.join(MILESTONE_UNITS)}")
        milestones = [float(m) for m in milestones or ()]
        if milestones and decay != "step":
            raise ValueError(f"milestones {milestones} need decay=step (decay is {decay!r})")
        if any(m < 0 for m in milestones) or any(b <= a for a, b in itertools.pairwise(milestones)):
            raise ValueError(f"milestones must be non-negative and increasing, got {milestones}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = min(round(warmup_epochs * steps_per_epoch), self.total_steps - 1)
        self.decay = decay
        self.power = power
        self.min_lr_ratio = min_lr_ratio
        per_unit = steps_per_epoch if milestone_unit == "epoch" else 1
        self.milestone_steps = [round(m * per_unit) for m in milestones]
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        """LR multiplier at optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "step":
            passed = bisect.bisect_right(self.milestone_steps, step)
            return max(self.gamma**passed, self.min_lr_ratio)
        progress = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        if self.decay == "cosine":
            remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            remaining = (1.0 - progress) ** self.power
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * remaining


def current_schedule(scheduler: dict | None) -> dict | None:
    """``scheduler`` with a :data:`LEGACY_SCHEDULE` ``_target_`` pointed at :class:`WarmupDecay`."""
    if scheduler is None or scheduler.get("_target_") != LEGACY_SCHEDULE:
        return scheduler
    return {**scheduler, "_target_": f"{WarmupDecay.__module__}.{WarmupDecay.__qualname__}"}
