"""AdaFace head: reference loss/gradients, EMA statistics, edge angles and training."""

import torch

from facerec.heads import create_head
from tests.heads.reference import assert_matches, assert_trains, ref_adaface, spread_batch


def test_defaults() -> None:
    margin = create_head("adaface", 8, 5).margin
    assert (margin.scale, margin.margin, margin.h, margin.momentum, margin.eps) == (64.0, 0.4, 0.333, 0.01, 1e-3)
    assert (margin.batch_mean.item(), margin.batch_std.item()) == (20.0, 100.0)


def test_matches_reference() -> None:
    torch.manual_seed(0)
    head = create_head("adaface", 8, 5, scale=30.0, margin=0.4, h=0.333, momentum=0.3).double()
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    embeddings = spread_batch(head.weight.detach(), labels)
    norms = embeddings.norm(dim=1)
    margin = head.margin
    margin.batch_mean.fill_(norms.mean().item())
    margin.batch_std.fill_(0.3)
    mean0, std0 = margin.batch_mean.item(), margin.batch_std.item()
    assert_matches(
        head,
        lambda x: ref_adaface(x, labels, head.weight, 30.0, 0.4, 0.333, 0.3, 1e-3, mean0, std0),
        embeddings,
        labels,
        [head.classifier.weight],
    )
    torch.testing.assert_close(margin.batch_mean.item(), 0.7 * mean0 + 0.3 * norms.mean().item())
    torch.testing.assert_close(margin.batch_std.item(), 0.7 * std0 + 0.3 * norms.std().item())


def test_eval_keeps_statistics() -> None:
    head = create_head("adaface", 8, 5).eval()
    head(torch.randn(4, 8), torch.arange(4))
    assert (head.margin.batch_mean.item(), head.margin.batch_std.item()) == (20.0, 100.0)


def test_norms_detached() -> None:
    """Only the cosine path carries gradient: scaling x leaves the loss's x-gradient orthogonal to x."""
    head = create_head("adaface", 8, 5)
    x = torch.randn(4, 8, requires_grad=True)
    head(x, torch.arange(4)).loss.backward()
    torch.testing.assert_close((x.grad * x.detach()).sum(dim=1), torch.zeros(4), atol=1e-5, rtol=0)


def test_finite_at_parallel_and_opposite() -> None:
    head = create_head("adaface", 2, 2)
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [30.0, 0.0]], requires_grad=True)
    loss = head(x, torch.tensor([0, 0, 0])).loss
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(head.classifier.weight.grad).all()


def test_trains() -> None:
    assert_trains(create_head("adaface", 8, 4))
