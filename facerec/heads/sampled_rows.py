"""Training a few rows of a large parameter as a small one, with their optimizer state.

Partial FC samples a share of the class centres each step. Indexing the (C, E) centres would give
them a dense (C, E) gradient and the optimizer would touch every row; instead the sampled rows are
copied into a small parameter, the optimizer steps that parameter with the rows' own state
(momentum, Adam moments) swapped in, and rows and state are written back after the step. Rows
not sampled in a step keep their values and state: no weight decay, no momentum drift (the rule of
insightface's first Partial FC). State that is not per row (Adam's ``step``) is shared by all rows.

One step::

    rows = sampled.take(weight, index)      # forward: (n, E) parameter holding weight[index]
    loss.backward()
    sampled.before_step(weight, optimizer)  # the rows' optimizer state, moved onto that parameter
    optimizer.step()
    sampled.after_step(weight)              # rows and state written back into weight's
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def is_per_row(value: object, rows: int) -> bool:
    """Whether an optimizer state value holds one entry per row (momentum, moments), not a shared scalar."""
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == rows


class SampledRows:
    """A small parameter standing in for some rows of a large one during one optimizer step.

    The small parameter, :attr:`param`, must be among the optimizer's parameters (in the large
    parameter's group); the large one gets no gradient. Several forwards before one step
    (gradient accumulation) add their rows to the same small parameter.

    Attributes:
        param: (n, ...) the rows being trained, empty between steps.
        rows: (n,) their indices in the large parameter, None between steps.
    """

    def __init__(self, like: Tensor) -> None:
        self.param = nn.Parameter(like.new_empty(0, *like.shape[1:]))
        self.rows: Tensor | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def take(self, weight: Tensor, rows: Tensor) -> Tensor:
        """The rows ``rows`` (n,) of ``weight`` (N, ...) as a tensor whose gradient reaches :attr:`param`.

        Returns:
            (n, ...) ``weight[rows]``, with autograd to :attr:`param`.
        """
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
        """Moves the taken rows' optimizer state from ``weight``'s entry onto :attr:`param`'s.

        Raises:
            ValueError: If :attr:`param` is not one of ``optimizer``'s parameters.
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
        """Writes the stepped rows and their optimizer state back into ``weight``'s; empties :attr:`param`."""
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
