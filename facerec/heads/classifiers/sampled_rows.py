"""Optimizer steps on sampled rows of a large parameter (Partial FC), with per-row optimizer state.

Unsampled rows keep values and state (no decay or momentum drift, as insightface's first Partial FC)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def is_per_row(value: object, rows: int) -> bool:
    """Whether an optimizer state value has one entry per row (momentum, moments)."""
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == rows


class SampledRows:
    """A small parameter standing in for some rows of a large one during one optimizer step.

    :attr:`param` must be in the optimizer (in the large parameter's group); the large one gets no
    gradient. Forwards before one step (gradient accumulation) share :attr:`param`. State that is not
    per row (Adam's ``step``) is shared by all rows. One step::

        rows = sampled.take(weight, index)      # (n, E) view of weight[index], grad to param
        loss.backward()
        sampled.before_step(weight, optimizer)  # rows' optimizer state moved onto param
        optimizer.step()
        sampled.after_step(weight)              # rows and state written back

    Attributes:
        param: (n, ...) the rows being trained; empty between steps.
        rows: (n,) their indices in the large parameter; None between steps.
    """

    def __init__(self, like: Tensor) -> None:
        self.param = nn.Parameter(like.new_empty(0, *like.shape[1:]))
        self.rows: Tensor | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def take(self, weight: Tensor, rows: Tensor) -> Tensor:
        """``weight[rows]`` (n, ...) for ``weight`` (N, ...), ``rows`` (n,); its gradient reaches :attr:`param`."""
        if self.rows is None:
            self.rows = rows
            self.param.data = weight.detach().index_select(0, rows)
            return self.param
        new = rows[~torch.isin(rows, self.rows)]
        if new.numel():
            self.rows = torch.cat([self.rows, new])
            self.param.data = torch.cat([self.param.data, weight.detach().index_select(0, new)])
            if self.param.grad is not None:
                self.param.grad = torch.cat([self.param.grad, self.param.grad.new_zeros(len(new), *weight.shape[1:])])
        order = self.rows.argsort()
        positions = order[torch.searchsorted(self.rows[order], rows)]
        return self.param[positions]

    def before_step(self, weight: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Moves the taken rows' optimizer state from ``weight``'s entry to :attr:`param`'s.

        Raises:
            ValueError: :attr:`param` is not in ``optimizer``.
        """
        if self.rows is None:
            return
        if not any(p is self.param for group in optimizer.param_groups for p in group["params"]):
            raise ValueError(
                "the sampled class centres are not in the optimizer: build it from head.param_groups(), "
                "not head.parameters()"
            )
        self._optimizer = optimizer
        full = optimizer.state.get(weight, {})
        optimizer.state[self.param] = {
            key: value.index_select(0, self.rows) if is_per_row(value, len(weight)) else value
            for key, value in full.items()
        }

    def after_step(self, weight: Tensor) -> None:
        """Writes the stepped rows and their optimizer state back into ``weight``; empties :attr:`param`."""
        if self.rows is None:
            return
        rows, n = self.rows, len(self.rows)
        with torch.no_grad():
            weight.index_copy_(0, rows, self.param.detach())
        if self._optimizer is not None:
            moved = self._optimizer.state.pop(self.param, {})
            full = self._optimizer.state[weight] if moved else {}
            for key, value in moved.items():
                if not is_per_row(value, n):
                    full[key] = value
                    continue
                if key not in full:
                    full[key] = value.new_zeros(len(weight), *value.shape[1:])
                full[key].index_copy_(0, rows, value)
        self.param.data = self.param.data[:0]
        self.param.grad = None
        self.rows, self._optimizer = None, None
