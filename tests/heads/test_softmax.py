"""Softmax head: reference loss/gradients and training."""

import pytest
import torch

from facerec.heads import create_head
from tests.heads.reference import assert_matches, assert_trains, ref_softmax


@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference(bias: bool) -> None:
    torch.manual_seed(0)
    head = create_head("softmax", 8, 5, bias=bias).double()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    cl = head.classifier
    assert cl.weight.shape == ((5, 9) if bias else (5, 8)), "the bias is the last column of classifier.weight"
    assert_matches(
        head,
        lambda x: ref_softmax(x, labels, cl.centres, cl.bias),
        torch.randn(6, 8, dtype=torch.float64),
        labels,
        [cl.weight],
    )


def test_trains() -> None:
    assert_trains(create_head("softmax", 8, 4))
