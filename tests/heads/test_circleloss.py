"""Circle loss, classification form (Sun et al., CVPR 2020): logits, loss and gradients.

The reference follows FaceX-Zoo's ``head/CircleLoss.py`` (the paper's Eq. 6 with class centres as the
positive and negative similarities: ``O_p = 1 + m``, ``O_n = −m``, ``Δ_p = 1 − m``, ``Δ_n = m``, α_p and
α_n computed from detached cosines, everything times γ, softmax cross-entropy) sample by sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import Tensor

from facerec.heads import CircleLoss, create_head
from facerec.heads.build import build_head

CONF = Path(__file__).resolve().parents[2] / "conf"
TOL = {"rtol": 1e-12, "atol": 1e-12}
E, C = 6, 5


def reference(x: Tensor, labels: Tensor, weight: Tensor, gamma: float, m: float, detach: bool = True):
    """(loss, logits (B, C)); ``detach=False`` lets the gradient through α (not the paper's loss)."""
    rows = []
    for i in range(x.shape[0]):
        row = []
        for j in range(weight.shape[0]):
            w = weight[j]
            cos = torch.clamp((x[i] * w).sum() / torch.sqrt((x[i] * x[i]).sum() * (w * w).sum()), -1.0, 1.0)
            weight_of = cos.detach().item() if detach else cos
            if j == int(labels[i]):
                alpha = max(1.0 + m - weight_of, 0.0) if detach else torch.clamp(1.0 + m - weight_of, min=0.0)
                row.append(gamma * alpha * (cos - (1.0 - m)))
            else:
                alpha = max(weight_of + m, 0.0) if detach else torch.clamp(weight_of + m, min=0.0)
                row.append(gamma * alpha * (cos - m))
        rows.append(torch.stack(row))
    losses = [torch.logsumexp(row, dim=0) - row[int(y)] for row, y in zip(rows, labels, strict=True)]
    return torch.stack(losses).mean(), torch.stack(rows)


def circle_head(classifier: dict | None = None, scale: float = 8.0, margin: float = 0.25):
    torch.manual_seed(0)
    return create_head("circleloss", E, C, classifier=classifier, scale=scale, margin=margin).double()


def batch() -> tuple[Tensor, Tensor]:
    torch.manual_seed(1)
    return torch.randn(8, E, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])


def loss_and_grads(head, x: Tensor, labels: Tensor) -> list[Tensor]:
    x = x.clone().requires_grad_(True)
    out = head(x, labels)
    return [out.loss, out.logits.detach(), *torch.autograd.grad(out.loss, [x, head.classifier.weight])]


def reference_and_grads(head, x: Tensor, labels: Tensor, detach: bool = True) -> list[Tensor]:
    x = x.clone().requires_grad_(True)
    loss, logits = reference(x, labels, head.classifier.weight, head.margin.scale, head.margin.margin, detach)
    return [loss, logits.detach(), *torch.autograd.grad(loss, [x, head.classifier.weight])]


def test_defaults_are_the_papers_face_recognition_values() -> None:
    margin = create_head("circleloss", E, C).margin
    assert (margin.scale, margin.margin) == (256.0, 0.25)


@pytest.mark.parametrize("margin", [0.25, 0.0, 0.4])
def test_matches_the_reference(margin: float) -> None:
    head = circle_head(margin=margin)
    x, labels = batch()
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(head.weight.detach(), dim=1).T
    assert (cos < -margin).any(), "some α_n clipped to 0"
    for got, want in zip(loss_and_grads(head, x, labels), reference_and_grads(head, x, labels), strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_alphas_carry_no_gradient() -> None:
    """The gradients differ from those of the same logits with α differentiated, so the test above tells."""
    head = circle_head()
    x, labels = batch()
    got = loss_and_grads(head, x, labels)
    undetached = reference_and_grads(head, x, labels, detach=False)
    torch.testing.assert_close(got[0], undetached[0], **TOL)
    assert not torch.allclose(got[2], undetached[2], rtol=1e-6, atol=1e-9)


def test_hand_worked_example() -> None:
    """E = C = 2, centres e1 and e2, x at 0.6 rad from e1 towards e2, class 0, γ = 1, m = 0.25:
    ``s_p = cos 0.6``, ``α_p = 1.25 − s_p``, target logit ``α_p·(s_p − 0.75)``; ``s_n = sin 0.6``,
    ``α_n = s_n + 0.25``, other logit ``α_n·(s_n − 0.25)``; loss ``log(1 + e^{z_n − z_p})``."""
    head = create_head("circleloss", 2, 2, scale=1.0, margin=0.25).double()
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(2))
    out = head(torch.tensor([[math.cos(0.6), math.sin(0.6)]], dtype=torch.float64), torch.tensor([0]))
    s_p, s_n = math.cos(0.6), math.sin(0.6)
    z_p, z_n = (1.25 - s_p) * (s_p - 0.75), (s_n + 0.25) * (s_n - 0.25)
    torch.testing.assert_close(out.logits, torch.tensor([[z_p, z_n]], dtype=torch.float64), **TOL)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(z_n - z_p)), rel=1e-12)


def test_partial_fc_at_full_rate_equals_the_full_classifier() -> None:
    full, partial = circle_head(), circle_head(classifier={"name": "partial_fc", "sample_rate": 1.0})
    partial.load_state_dict(full.state_dict())  # the same centres (Partial FC draws its own per block)
    x, labels = batch()
    for got, want in zip(loss_and_grads(partial, x, labels), loss_and_grads(full, x, labels), strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"scale": 0.0}, "head.margin.scale"),
        ({"scale": math.inf}, "head.margin.scale"),
        ({"margin": -0.1}, "head.margin.margin"),
        ({"margin": 0.5}, "head.margin.margin"),
    ],
)
def test_bad_values_are_refused(options: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        CircleLoss(**options)


def composed_head(*overrides: str):
    """``conf/train.yaml`` composed with ``overrides``; its head built for E, C."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return build_head(OmegaConf.to_container(cfg.head, resolve=True), E, C)


def test_head_config_and_small_data_preset() -> None:
    head = composed_head("experiment=small_data", "head=circleloss")
    assert isinstance(head.margin, CircleLoss)
    assert (head.margin.scale, head.margin.margin) == (128.0, 0.15)
    default = composed_head("head=circleloss").margin
    assert (default.scale, default.margin) == (256.0, 0.25)
