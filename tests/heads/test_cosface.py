"""CosFace head: reference loss/gradients, autocast and training."""

import torch

from facerec.heads import CosFace, create_head
from tests.heads.reference import (
    assert_autocast_close,
    assert_matches,
    assert_trains,
    ref_cosface,
    spread_batch,
)


def test_defaults() -> None:
    head = create_head("cosface", 8, 5)
    assert isinstance(head.margin, CosFace)
    assert (head.margin.scale, head.margin.margin) == (64.0, 0.35)


def test_matches_reference() -> None:
    torch.manual_seed(0)
    head = create_head("cosface", 8, 5, scale=30.0, margin=0.2).double()
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    assert_matches(
        head,
        lambda x: ref_cosface(x, labels, head.weight, 30.0, 0.2),
        spread_batch(head.weight.detach(), labels),
        labels,
        [head.classifier.weight],
    )


def test_autocast() -> None:
    assert_autocast_close("cosface")


def test_trains() -> None:
    assert_trains(create_head("cosface", 8, 4))
