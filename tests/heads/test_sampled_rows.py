"""SampledRows trains only the taken rows of a large parameter, with their own optimizer state.

Reference: a per-row SGD (momentum, weight decay) written out by hand, in which only the rows
taken in a step move and keep momentum; Adam on rows taken every step equals Adam on those rows.
"""

from __future__ import annotations

import pytest
import torch

from facerec.heads.classifiers.sampled_rows import SampledRows

N, E = 9, 3
LR, MOMENTUM, DECAY = 0.1, 0.9, 0.01


def loss_of(rows_param: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient for row i is ``rows_param[i] − targets[rows[i]]``, for (n, E) rows."""
    return 0.5 * (rows_param - targets[rows]).square().sum()


def per_row_sgd(weight: torch.Tensor, steps: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The hand-written rule: each taken row steps with its own momentum; the others are left alone."""
    weight, momentum = weight.clone(), {}
    for rows in steps:
        for row in rows.tolist():
            grad = weight[row] - targets[row] + DECAY * weight[row]
            momentum[row] = MOMENTUM * momentum[row] + grad if row in momentum else grad.clone()
            weight[row] = weight[row] - LR * momentum[row]
    return weight, momentum


def test_sgd_moves_only_the_taken_rows_with_their_own_momentum():
    generator = torch.Generator().manual_seed(0)
    start, targets = torch.randn(N, E, generator=generator, dtype=torch.float64), torch.randn(N, E, dtype=torch.float64)
    steps = [torch.tensor([1, 4, 6]), torch.tensor([6, 0, 1]), torch.tensor([8, 6])]
    weight = torch.nn.Parameter(start.clone())
    sampled = SampledRows(weight)
    optimizer = torch.optim.SGD([weight, sampled.param], lr=LR, momentum=MOMENTUM, weight_decay=DECAY)
    for rows in steps:
        loss_of(sampled.take(weight, rows), rows, targets).backward()
        sampled.before_step(weight, optimizer)
        optimizer.step()
        sampled.after_step(weight)
        optimizer.zero_grad()
    expected, momentum = per_row_sgd(start, steps, targets)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-12, atol=1e-12)
    buffer = optimizer.state[weight]["momentum_buffer"]
    for row in range(N):
        torch.testing.assert_close(buffer[row], momentum.get(row, torch.zeros(E, dtype=torch.float64)))
    assert weight.grad is None and sampled.param.numel() == 0 and sampled.param not in optimizer.state


def test_adam_on_rows_taken_every_step_equals_adam_on_those_rows():
    generator = torch.Generator().manual_seed(1)
    start, targets = torch.randn(N, E, generator=generator), torch.randn(N, E, generator=generator)
    rows = torch.tensor([2, 5, 7])
    weight = torch.nn.Parameter(start.clone())
    sampled = SampledRows(weight)
    optimizer = torch.optim.AdamW([weight, sampled.param], lr=0.05)
    small = torch.nn.Parameter(start[rows].clone())
    reference = torch.optim.AdamW([small], lr=0.05)
    for _ in range(3):
        loss_of(sampled.take(weight, rows), rows, targets).backward()
        sampled.before_step(weight, optimizer)
        optimizer.step()
        sampled.after_step(weight)
        optimizer.zero_grad()
        loss_of(small, rows, targets).backward()
        reference.step()
        reference.zero_grad()
    torch.testing.assert_close(weight.detach()[rows], small.detach())
    others = torch.ones(N, dtype=torch.bool).index_fill_(0, rows, False)
    assert torch.equal(weight.detach()[others], start[others]), "rows never taken get no weight decay"
    assert optimizer.state[weight]["exp_avg"][others].abs().sum() == 0
    assert int(optimizer.state[weight]["step"]) == 3


def test_micro_batches_before_one_step_add_their_rows():
    weight = torch.nn.Parameter(torch.arange(N * E, dtype=torch.float64).view(N, E))
    sampled = SampledRows(weight)
    first, second = torch.tensor([3, 1]), torch.tensor([1, 5, 0])
    assert torch.equal(sampled.take(weight, first), weight.detach()[first])
    sampled.take(weight, first).sum().backward()
    taken = sampled.take(weight, second)
    assert torch.equal(taken, weight.detach()[second])
    (2 * taken).sum().backward()
    grads = dict(zip(sampled.rows.tolist(), sampled.param.grad[:, 0].tolist(), strict=True))
    assert grads == {3: 1.0, 1: 3.0, 5: 2.0, 0: 2.0}


def test_an_optimizer_without_the_small_parameter_is_refused():
    weight = torch.nn.Parameter(torch.zeros(N, E))
    sampled = SampledRows(weight)
    sampled.take(weight, torch.tensor([0, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"build it from head.param_groups\(\)"):
        sampled.before_step(weight, torch.optim.SGD([weight], lr=0.1))
