"""Softmax + center loss (the ``center`` head): hand-computed update, reference loss/gradients, hooks, DDP and
training."""

from functools import partial

import pytest
import torch

from facerec.heads import Head, create_head
from facerec.heads.center_loss import CenterLoss
from tests.heads.reference import assert_matches, assert_trains, ref_center

LABELS = torch.tensor([0, 0, 2, 1])
CENTERS = {0: (1.0, 2.0), 1: (3.0, -3.0), 2: (-2.0, 4.0), 3: (5.0, 5.0)}


def hand_example() -> CenterLoss:
    """10 classes in 2-D with known centres for classes 0-3 (the rest zero)."""
    loss = CenterLoss(num_classes=10, embedding_size=2, weight=0.003, alpha=0.5)
    for j, c in CENTERS.items():
        loss.centers[j] = torch.tensor(c)
    return loss


def center_head(embedding_size: int, num_classes: int, **center) -> Head:
    """Softmax with a center-loss term on raw embeddings (``conf/head/center.yaml``); ``center``: its options,
    or ``term``: a built :class:`CenterLoss`."""
    term = center.pop("term", None) or partial(CenterLoss, **center)
    return create_head("softmax", embedding_size, num_classes, terms={"center": term})


def test_paper_update_by_hand() -> None:
    """y = [0, 0, 2, 1], x = 0: Δc_0 = 2c_0/3, Δc_1 = c_1/2, Δc_2 = c_2/2, others untouched."""
    center_loss = hand_example()
    x = torch.zeros(4, 2, requires_grad=True)
    value = center_loss(x, LABELS)
    value.backward()
    # λ·½·mean‖x − c_y‖² = 0.003·½·(5 + 5 + 20 + 18)/4
    assert value.item() == pytest.approx(0.003 * 0.5 * 48 / 4)
    # ∂/∂x_i = λ·(x_i − c_{y_i})/B = −0.00075·c_{y_i}
    expected_grad = torch.tensor([[-0.00075, -0.0015], [-0.00075, -0.0015], [0.0015, -0.003], [-0.00225, 0.00225]])
    torch.testing.assert_close(x.grad, expected_grad)
    center_loss.after_optimizer_step()
    expected = torch.zeros(10, 2)
    expected[0] = torch.tensor([1.0, 2.0]) - 0.5 * torch.tensor([2 / 3, 4 / 3])
    expected[1] = torch.tensor([3.0, -3.0]) - 0.5 * torch.tensor([1.5, -1.5])
    expected[2] = torch.tensor([-2.0, 4.0]) - 0.5 * torch.tensor([-1.0, 2.0])
    expected[3] = torch.tensor([5.0, 5.0])
    torch.testing.assert_close(center_loss.centers, expected)


def test_head_update_after_step_by_hand() -> None:
    head = center_head(2, 10, term=hand_example())
    x = torch.zeros(4, 2, requires_grad=True)
    out = head(x, LABELS)
    ce_grad = torch.autograd.grad(torch.nn.functional.cross_entropy(out.logits, LABELS), x, retain_graph=True)[0]
    out.loss.backward()
    center_grad = torch.tensor([[-0.00075, -0.0015], [-0.00075, -0.0015], [0.0015, -0.003], [-0.00225, 0.00225]])
    torch.testing.assert_close(x.grad, ce_grad + center_grad)
    before = head.terms["center"].centers.clone()
    head.after_optimizer_step()
    torch.testing.assert_close(head.terms["center"].centers[0], before[0] / 3 * 2)
    head.after_optimizer_step()  # the stored batch is consumed once
    torch.testing.assert_close(head.terms["center"].centers[0], before[0] / 3 * 2)


def test_no_update_outside_training() -> None:
    center_loss = hand_example()
    before = center_loss.centers.clone()
    center_loss.eval()(torch.zeros(4, 2), LABELS)
    center_loss.after_optimizer_step()
    with torch.no_grad():
        center_loss.train()(torch.zeros(4, 2), LABELS)
    center_loss.after_optimizer_step()
    torch.testing.assert_close(center_loss.centers, before)


def test_ddp_uses_global_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks with the same batch: the all-reduced rule sees every sample twice."""
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.mul_(2))
    center_loss = hand_example()
    center_loss(torch.zeros(4, 2), LABELS)
    center_loss.after_optimizer_step()
    # class 0: n = 4 in the global batch, Δc_0 = 4c_0/5
    torch.testing.assert_close(center_loss.centers[0], torch.tensor([1.0, 2.0]) * (1 - 0.5 * 4 / 5))
    torch.testing.assert_close(center_loss.centers[1], torch.tensor([3.0, -3.0]) * (1 - 0.5 * 2 / 3))


@pytest.mark.parametrize("update", ["paper", "sgd"])
def test_matches_reference(update: str) -> None:
    torch.manual_seed(0)
    head = center_head(8, 5, weight=0.1, update=update).double()
    centers = head.terms["center"].centers
    with torch.no_grad():
        centers.normal_()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    cl = head.classifier
    params = [cl.weight] + ([centers] if update == "sgd" else [])  # cl.weight: the centres, the bias last
    assert_matches(
        head,
        lambda x: ref_center(x, labels, cl.centres, cl.bias, centers, 0.1),
        torch.randn(6, 8, dtype=torch.float64),
        labels,
        params,
    )


def test_param_groups() -> None:
    paper = center_head(8, 5)
    assert "terms.center.centers" in dict(paper.named_buffers())
    assert all(p is not paper.terms["center"].centers for p in paper.parameters())
    assert {id(p) for g in paper.param_groups() for p in g["params"]} == {id(p) for p in paper.parameters()}
    sgd = center_head(8, 5, update="sgd", weight=0.01, alpha=0.5)
    groups = sgd.param_groups()
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in sgd.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(sgd.parameters()))
    assert groups[1] == {"params": [sgd.terms["center"].centers], "lr": 50.0, "weight_decay": 0.0}
    assert center_head(8, 5, update="sgd", center_lr=0.3).param_groups()[1]["lr"] == 0.3


def test_invalid_update() -> None:
    with pytest.raises(ValueError, match="paper, sgd"):
        center_head(8, 5, update="adam")


@pytest.mark.parametrize("update", ["paper", "sgd"])
def test_trains(update: str) -> None:
    head = center_head(8, 4, update=update)
    assert_trains(head)
    assert head.terms["center"].centers.abs().sum() > 0


def test_real_process_group(tmp_path) -> None:
    """A real (single-rank gloo) process group: the update runs through ``all_reduce`` unchanged."""
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        center_loss = hand_example()
        center_loss(torch.zeros(4, 2), LABELS)
        center_loss.after_optimizer_step()
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(center_loss.centers[0], torch.tensor([2 / 3, 4 / 3]))


def test_update_covers_every_batch_since_the_last_one() -> None:
    """Two forwards (accumulated micro-batches), one update: as one forward on both batches."""
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 3, 2, 0, 1, 1])
    split, whole = hand_example(), hand_example()
    split(x[:4], labels[:4])
    split(x[4:], labels[4:])
    split.after_optimizer_step()
    whole(x, labels)
    whole.after_optimizer_step()
    torch.testing.assert_close(split.centers, whole.centers)


def test_skipped_step_drops_its_batches() -> None:
    head = center_head(2, 10, term=hand_example())
    before = head.terms["center"].centers.clone()
    head(torch.zeros(4, 2), LABELS)
    head.after_optimizer_step(skipped=True)
    head.after_optimizer_step()
    torch.testing.assert_close(head.terms["center"].centers, before)
