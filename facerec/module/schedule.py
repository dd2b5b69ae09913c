"""Learning-rate schedules stepped per optimizer step."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence

DECAYS = ("cosine", "poly", "step")
MILESTONE_UNITS = ("epoch", "step")
LEGACY_SCHEDULE = "facerec.optim.WarmupDecay"
"""The ``_target_`` older checkpoints hold for :class:`WarmupDecay`; loaded as this class."""


class WarmupDecay:
    """LR multiplier: linear warmup from 0, then cosine, polynomial or step decay.

    Used as ``torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupDecay(...))`` stepped every
    optimizer step; ``step`` counts optimizer steps from 0.

    - ``cosine`` and ``poly`` decay from 1 to ``min_lr_ratio`` over the steps after the warmup.
    - ``step`` multiplies the LR by ``gamma`` at every milestone (``max(gamma**k, min_lr_ratio)``
      from the k-th milestone on), e.g. the ArcFace paper's CASIA schedule: 0.1, divided by 10 at
      20k and 28k iterations (``milestones=[20000, 28000], milestone_unit="step"``).

    Args:
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch (converts ``warmup_epochs`` and epoch milestones).
        warmup_epochs: Linear warmup length, in epochs (fractions allowed).
        decay: ``cosine``, ``poly`` or ``step``.
        power: Exponent of the polynomial decay (insightface uses 2).
        min_lr_ratio: Final LR as a fraction of the base LR (``step``: a floor).
        milestones: ``step`` decay only: where the LR drops, increasing, in ``milestone_unit``.
        milestone_unit: ``epoch`` (fractions allowed) or ``step`` (optimizer steps).
        gamma: ``step`` decay only: the factor applied at each milestone.

    Raises:
        ValueError: For an unknown ``decay`` or ``milestone_unit``, milestones that are negative,
            not increasing, or given without ``decay="step"``, or ``gamma`` outside (0, 1].
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
        """The LR multiplier for optimizer step ``step`` (0-based)."""
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
    """``scheduler`` with :data:`LEGACY_SCHEDULE` as its ``_target_`` replaced by this module's :class:`WarmupDecay`."""
    if scheduler is None or scheduler.get("_target_") != LEGACY_SCHEDULE:
        return scheduler
    return {**scheduler, "_target_": f"{WarmupDecay.__module__}.{WarmupDecay.__qualname__}"}
