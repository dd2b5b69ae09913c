"""ArcFace + center loss (the ``arcface_center`` head): reference loss/gradients for both ``center_on``
choices, hooks, training."""

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from facerec.heads import ArcFace, CenterLoss, build_head, create_head
from tests.heads.reference import assert_matches, assert_trains, ref_arcface_center, spread_batch
from tests.helpers import compose_config


def arcface_center(embedding_size: int, num_classes: int, scale: float = 64.0, **center) -> torch.nn.Module:
    """ArcFace with a center-loss term on normalized features (``conf/head/arcface_center.yaml``)."""
    center = {"center_on": "normalized", **center}
    return create_head(
        "arcface", embedding_size, num_classes, scale=scale, terms={"center": partial(CenterLoss, **center)}
    )


def test_defaults() -> None:
    """The ``arcface_center`` config's defaults: ArcFace's, and the center term on normalized features."""
    config = OmegaConf.to_container(compose_config("head=arcface_center").head, resolve=True)
    head = build_head(config, 8, 5)
    assert isinstance(head.margin, ArcFace)
    assert (head.margin.scale, head.margin.margin) == (64.0, 0.5)
    center = head.terms["center"]
    assert (center.weight, center.alpha, center.update, center.center_on) == (0.003, 0.5, "paper", "normalized")


@pytest.mark.parametrize("center_on", ["normalized", "raw"])
@pytest.mark.parametrize("update", ["paper", "sgd"])
def test_matches_reference(center_on: str, update: str) -> None:
    torch.manual_seed(0)
    head = arcface_center(8, 5, scale=30.0, weight=0.2, update=update, center_on=center_on).double()
    with torch.no_grad():
        head.terms["center"].centers.normal_()
    centers = head.terms["center"].centers
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    assert_matches(
        head,
        lambda x: ref_arcface_center(x, labels, head.weight, 30.0, 0.5, centers, 0.2, center_on),
        spread_batch(head.weight.detach(), labels),
        labels,
        [head.classifier.weight, centers] if update == "sgd" else [head.classifier.weight],
    )


def test_paper_update_uses_normalized_features() -> None:
    head = arcface_center(2, 3)
    head(torch.tensor([[3.0, 0.0], [0.0, -5.0]]), torch.tensor([0, 1]))
    head.after_optimizer_step()
    expected = torch.tensor([[0.25, 0.0], [0.0, -0.25], [0.0, 0.0]])  # c ← α·x̂/(1 + 1) from c = 0
    torch.testing.assert_close(head.terms["center"].centers, expected)


def test_invalid_center_on() -> None:
    with pytest.raises(ValueError, match="unknown center_on 'both'; valid: raw, normalized"):
        arcface_center(8, 5, center_on="both")


@pytest.mark.parametrize("center_on", ["normalized", "raw"])
def test_trains(center_on: str) -> None:
    assert_trains(arcface_center(8, 4, center_on=center_on))
