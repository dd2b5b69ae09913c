"""MagFace (Meng et al., CVPR 2021): margin m(a), regulariser g(a), quality score, configs.

The reference follows the authors' code (IrvingMeng/MagFace ``models/magface.py``: ``MagLinear`` and
``MagLoss``, with ``lambda_g`` from ``run/trainer.py``) sample by sample, with one deviation: their
``MagLinear`` defaults to ``easy_margin=True`` (the margin only where cos θ_y > 0), which the paper's
loss (Eq. 4, ``cos(θ_y + m(a_i))`` for every sample) does not have; the margin's default
``easy_margin=False`` is the paper's loss with their non-easy fallback past ``π − m(a)``, and
``easy_margin=True`` reproduces their training default (both are tested).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import Tensor, nn

from facerec.heads import MagFace, MagFaceRegularizer, create_head
from facerec.heads.build import build_head
from facerec.heads.margins.magface import quality
from facerec.inference import FaceEmbedder

CONF = Path(__file__).resolve().parents[2] / "conf"
TOL = {"rtol": 1e-12, "atol": 1e-12}
E, C = 6, 5
BOUNDS = {"lower_norm": 1.0, "upper_norm": 4.0, "lower_margin": 0.45, "upper_margin": 0.8}


def reference(x: Tensor, labels: Tensor, weight: Tensor, scale: float, lambda_g: float, easy_margin: bool = False):
    """(loss, logits (B, C)): per-sample MagLinear logits, cross-entropy and ``λ_g·g(a)``, in scalar ops."""
    l_a, u_a, l_m, u_m = BOUNDS["lower_norm"], BOUNDS["upper_norm"], BOUNDS["lower_margin"], BOUNDS["upper_margin"]
    rows, losses = [], []
    for i in range(x.shape[0]):
        a = torch.clamp(torch.sqrt((x[i] * x[i]).sum()), l_a, u_a)
        m = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
        row = []
        for j in range(weight.shape[0]):
            w = weight[j]
            cos = torch.clamp((x[i] * w).sum() / torch.sqrt((x[i] * x[i]).sum() * (w * w).sum()), -1.0, 1.0)
            if j == int(labels[i]):
                with_margin = cos * torch.cos(m) - torch.sqrt(1.0 - cos * cos) * torch.sin(m)
                if easy_margin:
                    cos = with_margin if cos > 0 else cos
                else:
                    cos = with_margin if cos > torch.cos(math.pi - m) else cos - torch.sin(math.pi - m) * m
            row.append(scale * cos)
        rows.append(torch.stack(row))
        g = a / u_a**2 + 1.0 / a
        losses.append(torch.logsumexp(rows[-1], dim=0) - rows[-1][int(labels[i])] + lambda_g * g)
    return torch.stack(losses).mean(), torch.stack(rows)


def magface_head(scale: float = 3.0, lambda_g: float = 0.7, classifier: dict | None = None, **options):
    """A float64 MagFace head with :data:`BOUNDS` and the regulariser sharing them."""
    torch.manual_seed(0)
    bounds = {"lower_norm": BOUNDS["lower_norm"], "upper_norm": BOUNDS["upper_norm"]}
    term = MagFaceRegularizer(weight=lambda_g, **bounds)
    head = create_head(
        "magface", E, C, classifier=classifier, terms={"magface": term}, scale=scale, **BOUNDS, **options
    )
    return head.double()


def batch() -> tuple[Tensor, Tensor]:
    """Magnitudes 0.5 to 6 (below, inside and above [1, 4]); angles to the class centre from 0.1 to 3.1 rad."""
    torch.manual_seed(1)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    directions = F.normalize(torch.randn(8, E, dtype=torch.float64), dim=1)
    return directions * torch.linspace(0.5, 6.0, 8, dtype=torch.float64)[:, None], labels


def with_target_angles(x: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """``x`` turned to angles 0.1 … 3.1 rad from its class centre (the last ones past π − m(a)), norms kept."""
    w = F.normalize(weight[labels], dim=1)
    other = F.normalize(x - (x * w).sum(1, keepdim=True) * w, dim=1)
    angles = torch.linspace(0.1, 3.1, len(x), dtype=x.dtype)[:, None]
    return x.norm(dim=1, keepdim=True) * (torch.cos(angles) * w + torch.sin(angles) * other)


def check_against_reference(head: nn.Module, easy_margin: bool = False) -> None:
    x, labels = batch()
    x = with_target_angles(x, labels, head.classifier.weight.detach())
    weight = head.classifier.weight
    x_ref = x.clone().requires_grad_(True)
    loss_ref, logits_ref = reference(x_ref, labels, weight, head.margin.scale, head.terms.magface.weight, easy_margin)
    grads_ref = torch.autograd.grad(loss_ref, [x_ref, weight])
    x_head = x.clone().requires_grad_(True)
    out = head(x_head, labels)
    grads = torch.autograd.grad(out.loss, [x_head, weight])
    torch.testing.assert_close(out.logits, logits_ref, **TOL)
    torch.testing.assert_close(out.loss, loss_ref, **TOL)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_matches_the_authors_math_with_the_fallback() -> None:
    head = magface_head()
    x, labels = batch()
    cos = F.cosine_similarity(with_target_angles(x, labels, head.classifier.weight.detach()), head.weight[labels])
    margin = head.margin.adaptive_margin(x.norm(dim=1))
    assert (cos <= torch.cos(math.pi - margin)).sum() >= 1, "a sample in the fallback region"
    check_against_reference(head)


def test_matches_the_authors_easy_margin() -> None:
    check_against_reference(magface_head(easy_margin=True), easy_margin=True)


def test_hand_worked_example() -> None:
    """E = C = 2, centres e1 and e2, x = 60·(cos 0.3, sin 0.3) of class 0, s = 1, the paper's bounds: a = 60 lies
    halfway between l_a = 10 and u_a = 110, so m = (0.45 + 0.8)/2 = 0.625; the logits are
    (cos(0.3 + 0.625), sin 0.3) and the loss ``log(e^{cos 0.925} + e^{sin 0.3}) − cos 0.925 + λ_g·(60/110² + 1/60)``.
    """
    term = MagFaceRegularizer(weight=35.0)
    head = create_head("magface", 2, 2, terms={"magface": term}, scale=1.0).double()
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(2))
    x = 60.0 * torch.tensor([[math.cos(0.3), math.sin(0.3)]], dtype=torch.float64)
    out = head(x, torch.tensor([0]))
    target, other = math.cos(0.925), math.sin(0.3)
    torch.testing.assert_close(out.logits, torch.tensor([[target, other]], dtype=torch.float64), **TOL)
    expected = math.log(math.exp(target) + math.exp(other)) - target + 35.0 * (60.0 / 110.0**2 + 1.0 / 60.0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


def test_margin_gradient_flows_through_the_clipped_magnitude() -> None:
    """Without the regulariser, the loss' x-gradient has a radial part (x·∂L/∂x ≠ 0) where l_a < ‖x‖ < u_a
    (m(a) depends on ‖x‖), and none where the magnitude is clipped."""
    head = magface_head(lambda_g=0.0)
    x, labels = batch()
    x = x.requires_grad_(True)
    head(x, labels).loss.backward()
    radial = (x.grad * x.detach()).sum(dim=1).abs()
    norms = x.detach().norm(dim=1)
    inside = (norms > BOUNDS["lower_norm"]) & (norms < BOUNDS["upper_norm"])
    assert inside.any() and (~inside).any()
    assert (radial[inside] > 1e-6).all()
    torch.testing.assert_close(radial[~inside], torch.zeros_like(radial[~inside]), rtol=0, atol=1e-12)


def test_partial_fc_at_full_rate_equals_the_full_classifier() -> None:
    full, partial = magface_head(), magface_head(classifier={"name": "partial_fc", "sample_rate": 1.0})
    partial.load_state_dict(full.state_dict())  # the same centres (Partial FC draws its own per block)
    x, labels = batch()
    results = []
    for head in (full, partial):
        xi = x.clone().requires_grad_(True)
        loss = head(xi, labels).loss
        results.append([loss, *torch.autograd.grad(loss, [xi, head.classifier.weight])])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: MagFace(scale=0.0), "head.margin.scale"),
        (lambda: MagFace(lower_norm=0.0), "head.margin.lower_norm"),
        (lambda: MagFace(lower_norm=10.0, upper_norm=10.0), "head.margin.upper_norm"),
        (lambda: MagFace(lower_margin=-0.1), "head.margin.lower_margin"),
        (lambda: MagFace(lower_margin=0.5, upper_margin=0.4), "head.margin.upper_margin"),
        (lambda: MagFace(upper_margin=math.pi / 2), "head.margin.upper_margin"),
        (lambda: MagFaceRegularizer(weight=-1.0), "head.terms.magface.weight"),
        (lambda: MagFaceRegularizer(lower_norm=20.0, upper_norm=10.0), "head.terms.magface.upper_norm"),
    ],
)
def test_bad_values_are_refused(build, name: str) -> None:
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        build()


def test_quality_is_the_raw_magnitude_of_the_embedders_output() -> None:
    """``quality``'s docstring recipe on a :class:`FaceEmbedder` (what ``facerec.load_model`` returns) with
    ``flip=False`` gives each raw embedding's norm, unclipped, float32 for half input; with ``flip=True`` the
    norm of the image's plus its mirror's embedding, which the docstring warns about."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, E))
    faces = [np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8) for seed in range(3)]
    embedder = FaceEmbedder(net, (4, 4), flip=False)
    images = torch.stack([embedder.transform(image=rgb)["image"] for rgb in faces])
    with torch.no_grad():
        scores = quality(embedder(images.to(embedder.device)))
        flipped = quality(FaceEmbedder(net, (4, 4), flip=True)(images))
        raw = net(images)
        mirrored = net(images.flip(3))
    assert images.shape == (3, 3, 4, 4) and images.min() >= -1 and images.max() <= 1
    assert scores.shape == (3,)
    torch.testing.assert_close(scores, raw.norm(dim=1))
    torch.testing.assert_close(flipped, (raw + mirrored).norm(dim=1))
    assert quality(torch.tensor([[300.0, 400.0]], dtype=torch.float16)).tolist() == [500.0]
    assert quality(torch.ones(2, 4, dtype=torch.bfloat16)).dtype == torch.float32


def composed_head(*overrides: str):
    """``conf/train.yaml`` composed with ``overrides``; its head built for E, C."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return build_head(OmegaConf.to_container(cfg.head, resolve=True), E, C)


def test_head_config_shares_the_magnitude_bounds() -> None:
    """``conf/head/magface.yaml`` gives the regulariser the margin's l_a, u_a, also when they are overridden."""
    head = composed_head("head=magface", "head.margin.lower_norm=5", "head.margin.upper_norm=50")
    assert isinstance(head.margin, MagFace) and isinstance(head.terms.magface, MagFaceRegularizer)
    term, margin = head.terms.magface, head.margin
    assert (term.lower_norm, term.upper_norm) == (margin.lower_norm, margin.upper_norm) == (5, 50)
    assert (margin.scale, margin.lower_margin, margin.upper_margin, term.weight) == (64.0, 0.45, 0.8, 35.0)
    assert not margin.easy_margin


def test_small_data_preset() -> None:
    margin = composed_head("experiment=small_data", "head=magface").margin
    assert (margin.scale, margin.lower_margin, margin.upper_margin) == (32.0, 0.27, 0.48)
