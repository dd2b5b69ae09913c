"""Sub-center ArcFace (ArcFace with ``subcenters=K``): weight layout, reference loss/gradients and training."""

import torch

from facerec.heads import ArcFace, create_head
from tests.heads.reference import assert_matches, assert_trains, class_scores, ref_subcenter_arcface, spread_batch


def test_weight_layout_and_defaults() -> None:
    head = create_head("arcface", 8, 5, subcenters=3)
    assert isinstance(head.margin, ArcFace) and (head.margin.scale, head.margin.margin) == (64.0, 0.5)
    assert head.classifier.rows_per_class == 3
    assert head.weight.shape == (15, 8)
    x = torch.randn(4, 8)
    cos = torch.nn.functional.cosine_similarity(x[:, None, None], head.weight.view(5, 3, 8)[None], dim=-1)
    torch.testing.assert_close(class_scores(head, x), cos.amax(dim=2))


def test_matches_reference() -> None:
    torch.manual_seed(0)
    head = create_head("arcface", 8, 4, scale=30.0, margin=0.5, subcenters=2).double()
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert_matches(
        head,
        lambda x: ref_subcenter_arcface(x, labels, head.weight, 30.0, 0.5, 2),
        spread_batch(head.weight.detach()[::2], labels),
        labels,
        [head.classifier.weight],
    )


def test_trains() -> None:
    assert_trains(create_head("arcface", 8, 4, subcenters=3))
