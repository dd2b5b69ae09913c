"""SphereFace2-C head: per-element float64 reference over two steps, the bias, centre gradients, Partial FC.

The reference is written from the authors' code (ydwen/opensphere ``model/head/sphereface2.py``,
``magn_type='C'``): logits ``r·(cos + [g(cos) ∓ m − cos]) + b`` with the bracket detached, binary
cross-entropy with per-element weights ``lw·C/r·(λ or 1 − λ)`` averaged over the B·C elements.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from facerec.heads import Head, MarginInput, SphereFace2, SphereFace2Loss, build_head
from facerec.heads.build import classifier_factory
from facerec.heads.classifiers.full import FullColumns

TOL = {"rtol": 1e-12, "atol": 1e-12}
R, M, LAM, T, LW = 30.0, 0.3, 0.6, 3.0, 50.0


def make_head(num_classes: int = 5, classifier: dict | None = None, embedding_size: int = 8) -> Head:
    return Head(
        embedding_size,
        num_classes,
        SphereFace2(scale=R, margin=M, lam=LAM, t=T),
        classifier=classifier_factory(classifier),
        loss=SphereFace2Loss(lam=LAM, loss_weight=LW, scale=R),
    )


def reference_bias(num_classes: int, r: float, m: float, lam: float, t: float) -> float:
    """The authors' initial b for SphereFace2-C."""
    z = lam / ((1.0 - lam) * (num_classes - 1.0))
    ay = r * (2.0 * 0.5**t - 1.0 - m)
    ai = r * (2.0 * 0.5**t - 1.0 + m)
    return math.log(2.0 * z) - ai - math.log(1.0 - z + math.sqrt((1.0 - z) ** 2 + 4.0 * z * math.exp(ay - ai)))


def reference(x, labels, weight, bias, normalise_weight: bool = True):
    """(loss, logits), one scalar term per sample and class; ``normalise_weight=False``: rows are unit already
    and the gradient does not pass through their normalisation (the authors' in-place normalisation)."""
    num_samples, num_classes = x.shape[0], weight.shape[0]
    total, logits = 0.0, []
    for i in range(num_samples):
        xi = x[i] / torch.sqrt((x[i] * x[i]).sum())
        row = []
        for j in range(num_classes):
            wj = weight[j] / torch.sqrt((weight[j] * weight[j]).sum()) if normalise_weight else weight[j]
            c = (xi * wj).sum()
            positive = j == int(labels[i])
            g = 2.0 * ((c + 1.0) / 2.0) ** T - 1.0 + (-M if positive else M)
            z = R * (c + (g - c).detach()) + bias
            w = LW * num_classes / R * (LAM if positive else 1.0 - LAM)
            total = total + w * (F.softplus(-z) if positive else F.softplus(z))
            row.append(z)
        logits.append(torch.stack(row))
    return total / (num_samples * num_classes), torch.stack(logits)


def batch(seed: int = 0, num_samples: int = 8, embedding_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % 5
    return torch.randn(num_samples, embedding_size, generator=g, dtype=torch.float64), labels


def head_grads(head: Head, x: torch.Tensor, labels: torch.Tensor):
    x = x.clone().requires_grad_()
    out = head(x, labels)
    return out, torch.autograd.grad(out.loss, [x, head.classifier.weight, head.margin.bias])


def test_defaults_and_initial_bias() -> None:
    margin = SphereFace2()
    assert (margin.scale, margin.margin, margin.lam, margin.t) == (40.0, 0.4, 0.7, 3.0)
    loss = SphereFace2Loss()
    assert (loss.lam, loss.loss_weight, loss.scale) == (0.7, 50.0, 40.0)
    head = Head(8, 5, margin, loss=loss)
    head(*batch(embedding_size=8))
    assert margin.bias.item() == pytest.approx(reference_bias(5, 40.0, 0.4, 0.7, 3.0), rel=1e-6)  # float32


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_initial_bias_hand_worked(t: float) -> None:
    """C = 2, λ = ½: z = 1, √temp = 2e^{−rm}, so b = log 2 − r(g(0) + m) − log(2e^{−rm}) = −r·g(0),
    g(0) = 2·½^t − 1: the logit of a sample orthogonal to every centre is then ±rm, symmetric."""
    head = Head(4, 2, SphereFace2(scale=40.0, margin=0.4, lam=0.5, t=t), loss=SphereFace2Loss(lam=0.5))
    head(torch.randn(2, 4), torch.tensor([0, 1]))
    torch.testing.assert_close(head.margin.bias.item(), -40.0 * (2.0 * 0.5**t - 1.0), rtol=1e-12, atol=1e-12)


def test_matches_reference_two_steps() -> None:
    """Loss (the authors' mean over B·C), logits, gradients w.r.t. embeddings, centres and b at 1e-12;
    b is set once, on the first forward, and trained from there."""
    torch.manual_seed(0)
    head = make_head().double()
    for step in range(2):
        x, labels = batch(seed=step)
        b_now = reference_bias(5, R, M, LAM, T) if step == 0 else head.margin.bias.item()
        x_ref = x.clone().requires_grad_()
        w_ref = head.classifier.weight.detach().clone().requires_grad_()
        b_ref = torch.tensor(b_now, dtype=torch.float64, requires_grad=True)
        ref_loss, ref_logits = reference(x_ref, labels, w_ref, b_ref)
        ref_grads = torch.autograd.grad(ref_loss, [x_ref, w_ref, b_ref])
        out, grads = head_grads(head, x, labels)
        torch.testing.assert_close(out.loss, ref_loss, **TOL)
        torch.testing.assert_close(out.logits, ref_logits, **TOL)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, **TOL)
        with torch.no_grad():
            head.classifier.weight -= 0.1 * grads[1]
            head.margin.bias -= 0.1 * grads[2]
    assert head.margin.bias_ready.item()


def test_centre_gradient_is_the_authors_tangential_part() -> None:
    """The authors renormalise ``w`` in place before each step and differentiate ``x̂·w`` at ‖w‖ = 1, so their
    centre gradient ``G`` has a radial part; facerec differentiates through ``w/‖w‖``, which at ‖w‖ = 1 gives
    ``(I − ŵŵᵀ)G``. The radial part only changes ‖w‖, which the next in-place normalisation discards (plain
    SGD), so both take the same step on the sphere; embeddings' and b's gradients are identical."""
    torch.manual_seed(0)
    head = make_head().double()
    with torch.no_grad():
        head.classifier.weight.copy_(F.normalize(head.classifier.weight, dim=1))
    x, labels = batch()
    b = torch.tensor(reference_bias(5, R, M, LAM, T), dtype=torch.float64, requires_grad=True)
    x_ref = x.clone().requires_grad_()
    w_ref = head.classifier.weight.detach().clone().requires_grad_()
    ref_loss, _ = reference(x_ref, labels, w_ref, b, normalise_weight=False)
    gx, gw, gb = torch.autograd.grad(ref_loss, [x_ref, w_ref, b])
    out, grads = head_grads(head, x, labels)
    unit = w_ref.detach()
    tangential = gw - (gw * unit).sum(dim=1, keepdim=True) * unit
    torch.testing.assert_close(out.loss, ref_loss, **TOL)
    for got, want in zip(grads, (gx, tangential, gb), strict=True):
        torch.testing.assert_close(got, want, **TOL)
    assert (gw * unit).sum(dim=1).abs().max() > 1e-3  # the authors' gradient does have a radial part


def test_bias_gradient_scaled_for_ddp() -> None:
    """Under Partial FC on W ranks each rank's b gradient covers its own columns; DDP averages it over the
    ranks, so the margin multiplies it by ``columns.grad_scale`` = W and the average becomes the sum."""

    class ThreeRankColumns(FullColumns):
        grad_scale = 3.0

    margin = SphereFace2().double()
    cos = torch.rand(4, 6, dtype=torch.float64) * 2 - 1
    for columns, factor in ((FullColumns(6), 1.0), (ThreeRankColumns(6), 3.0)):
        margin.bias.grad = None
        margin(MarginInput(cos, torch.arange(4), torch.ones(4), columns, None)).sum().backward()
        assert margin.bias.grad.item() == pytest.approx(factor * 24.0, rel=1e-12)


def test_partial_fc_full_rate_equals_full() -> None:
    torch.manual_seed(0)
    full = make_head().double()
    partial = make_head(classifier={"name": "partial_fc", "sample_rate": 1.0}).double()
    partial.load_state_dict(full.state_dict())
    x, labels = batch()
    out_full, grads_full = head_grads(full, x, labels)
    out_partial, grads_partial = head_grads(partial, x, labels)
    torch.testing.assert_close(out_partial.loss, out_full.loss, **TOL)
    for got, want in zip(grads_partial, grads_full, strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_partial_fc_sampling_refused() -> None:
    """r < 1 drops negative classes from the class sum; the batch's classes are always kept, so a rescaled
    sum would be biased towards them, and b's initial value assumes all C − 1 negatives: refused."""
    with pytest.raises(ValueError, match="sample_rate=1.0"):
        make_head(num_classes=12, classifier={"name": "partial_fc", "sample_rate": 0.5})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"scale": 0.0}, "scale"), ({"margin": -0.1}, "margin"), ({"lam": 0.0}, "lam"), ({"lam": 1.0}, "lam"),
     ({"t": 0.0}, "t")],
)  # fmt: skip
def test_bad_parameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"head.margin.{name}="):
        SphereFace2(**kwargs)


@pytest.mark.parametrize(("kwargs", "name"), [({"lam": 1.0}, "lam"), ({"loss_weight": 0.0}, "loss_weight")])
def test_bad_loss_parameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"head.loss.{name}="):
        SphereFace2Loss(**kwargs)


def test_head_config() -> None:
    """``conf/head/sphereface2.yaml`` sets the loss, which takes λ and r from the margin (also in the preset)."""
    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        for overrides, scale, margin in ((["head=sphereface2"], 40.0, 0.4),
                                         (["head=sphereface2", "experiment=small_data"], 32.0, 0.24)):  # fmt: skip
            head = build_head(compose("train", overrides=overrides).head, 8, 5)
            assert isinstance(head.loss, SphereFace2Loss)
            assert (head.margin.scale, head.margin.margin, head.loss.scale, head.loss.lam) == (
                scale,
                margin,
                scale,
                0.7,
            )


def test_one_class_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        make_head(num_classes=1)(torch.randn(2, 8), torch.zeros(2, dtype=torch.long))
