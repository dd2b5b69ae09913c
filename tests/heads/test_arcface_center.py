"""ArcFace + center loss: reference loss/gradients for both ``center_on`` choices, hooks, training."""

import pytest
import torch

from facerec.heads import create_head
from tests.heads.reference import assert_matches, assert_trains, ref_arcface_center, spread_batch


def test_defaults() -> None:
    head = create_head("arcface_center", 8, 5)
    assert (head.scale, head.margin, head.center_on) == (64.0, 0.5, "normalized")
    assert (head.center_loss.center_weight, head.center_loss.alpha, head.center_loss.update) == (
        0.003,
        0.5,
        "paper",
    )


@pytest.mark.parametrize("center_on", ["normalized", "raw"])
@pytest.mark.parametrize("update", ["paper", "sgd"])
def test_matches_reference(center_on: str, update: str) -> None:
    torch.manual_seed(0)
    head = create_head(
        "arcface_center", 8, 5, scale=30.0, center_weight=0.2, update=update, center_on=center_on
    ).double()
    with torch.no_grad():
        head.center_loss.centers.normal_()
    centers = head.center_loss.centers
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    assert_matches(
        head,
        lambda x: ref_arcface_center(x, labels, head.weight, 30.0, 0.5, centers, 0.2, center_on),
        spread_batch(head.weight.detach(), labels),
        labels,
        [head.weight, centers] if update == "sgd" else [head.weight],
    )


def test_paper_update_uses_normalized_features() -> None:
    head = create_head("arcface_center", 2, 3)
    head(torch.tensor([[3.0, 0.0], [0.0, -5.0]]), torch.tensor([0, 1]))
    head.update_after_step()
    expected = torch.tensor([[0.25, 0.0], [0.0, -0.25], [0.0, 0.0]])  # c ← α·x̂/(1 + 1) from c = 0
    torch.testing.assert_close(head.center_loss.centers, expected)


def test_invalid_center_on() -> None:
    with pytest.raises(ValueError, match="normalized, raw"):
        create_head("arcface_center", 8, 5, center_on="both")


@pytest.mark.parametrize("center_on", ["normalized", "raw"])
def test_trains(center_on: str) -> None:
    assert_trains(create_head("arcface_center", 8, 4, center_on=center_on))
