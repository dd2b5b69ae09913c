"""Learning-rate schedules stepped per optimizer step."""

from __future__ import annotations

import math


class WarmupDecay:
    """LR multiplier: linear warmup from 0, then cosine or polynomial decay to ``min_lr_ratio``.

    Used as ``torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupDecay(...))`` stepped every
    optimizer step.

    Args:
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch (converts ``warmup_epochs``).
        warmup_epochs: Linear warmup length, in epochs (fractions allowed).
        decay: ``cosine`` or ``poly``.
        power: Exponent of the polynomial decay (insightface uses 2).
        min_lr_ratio: Final LR as a fraction of the base LR.
    """

    def __init__(
        self,
        total_steps: int,
        steps_per_epoch: int,
        warmup_epochs: float = 0.0,
        decay: str = "cosine",
        power: float = 2.0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if decay not in ("cosine", "poly"):
            raise ValueError(f"unknown decay {decay!r}; choose cosine or poly")
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = min(round(warmup_epochs * steps_per_epoch), self.total_steps - 1)
        self.decay = decay
        self.power = power
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        if self.decay == "cosine":
            remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            remaining = (1.0 - progress) ** self.power
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * remaining
