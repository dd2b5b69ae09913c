"""AdaCos (Zhang et al., CVPR 2019), dynamic version: the scale's updates, logits, loss and gradients.

The reference follows the authors' formulas as FaceX-Zoo's ``head/AdaCos.py`` computes them (scale
√2·log(C − 1) at first, then before each training forward's logits
``s ← log B_avg / cos(min(π/4, θ_med))`` from the previous s; ``torch.median``, the lower middle value
for an even batch), sample by sample, with one deviation: FaceX-Zoo multiplies the raw features with
the normalised centres, which are not cosines; the paper (and here) uses ``cos θ`` of normalised
features and centres.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import Tensor

from facerec.heads import AdaCos, create_head
from facerec.heads.build import build_head

CONF = Path(__file__).resolve().parents[2] / "conf"
TOL = {"rtol": 1e-12, "atol": 1e-12}
E, C = 6, 12
FIXED = math.sqrt(2) * math.log(C - 1)
"""The fixed AdaCos scale √2·log(C − 1), the dynamic one's start."""


def cosine(a: Tensor, b: Tensor) -> Tensor:
    return torch.clamp((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()), -1.0, 1.0)


def reference_step(x: Tensor, labels: Tensor, weight: Tensor, scale: float, coverage: float = 1.0):
    """(loss, logits (B, n), new scale) of one training forward over the columns ``weight`` (n, E).

    ``coverage``: the factor on B_avg, (C − 1)/(n − 1) when ``weight`` holds sampled columns.
    """
    cos = [[cosine(x[i], weight[j]) for j in range(weight.shape[0])] for i in range(x.shape[0])]
    with torch.no_grad():
        others = [math.exp(scale * c.item()) for i, row in enumerate(cos) for j, c in enumerate(row) if j != labels[i]]
        b_avg = coverage * sum(others) / len(cos)
        thetas = sorted(
            math.acos(min(max(row[int(y)].item(), -1 + 1e-7), 1 - 1e-7)) for row, y in zip(cos, labels, strict=True)
        )
        theta_med = thetas[(len(thetas) - 1) // 2]
        new_scale = math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))
    rows = [torch.stack([new_scale * c for c in row]) for row in cos]
    losses = [torch.logsumexp(row, dim=0) - row[int(y)] for row, y in zip(rows, labels, strict=True)]
    return torch.stack(losses).mean(), torch.stack(rows), new_scale


def batches() -> list[tuple[Tensor, Tensor]]:
    """Two steps' (x (8, E), labels (8,)), float64."""
    torch.manual_seed(1)
    labels = torch.tensor([0, 1, 2, 3, 6, 7, 8, 11])
    return [(3.0 * torch.randn(8, E, dtype=torch.float64), labels.roll(step)) for step in range(2)]


def adacos_head(classifier: dict | None = None, **options):
    torch.manual_seed(0)
    return create_head("adacos", E, C, classifier=classifier, **options).double()


def step(head, x: Tensor, labels: Tensor) -> list[Tensor]:
    """[loss, logits, grad x, grad centres, scale after the forward]."""
    x = x.clone().requires_grad_(True)
    out = head(x, labels)
    centres = getattr(head.classifier, "trained_centres", head.classifier.weight)  # Partial FC r < 1: the sampled
    grads = torch.autograd.grad(out.loss, [x, centres])
    return [out.loss, out.logits.detach(), *grads, head.margin.scale.clone()]


def test_scale_starts_at_the_fixed_adacos_scale() -> None:
    head = adacos_head()
    assert head.margin.scale.item() == 0.0, "unset until the first forward knows C"
    head.eval()(torch.randn(4, E, dtype=torch.float64), torch.arange(4))
    assert head.margin.scale.item() == pytest.approx(FIXED, rel=1e-15)


def test_two_training_steps_match_the_reference() -> None:
    head = adacos_head()
    scale = FIXED
    for x, labels in batches():
        x_ref = x.clone().requires_grad_(True)
        loss_ref, logits_ref, scale = reference_step(x_ref, labels, head.classifier.weight, scale)
        want = [loss_ref, logits_ref, *torch.autograd.grad(loss_ref, [x_ref, head.classifier.weight])]
        got = step(head, x, labels)
        for value, expected in zip(got[:4], want, strict=True):
            torch.testing.assert_close(value, expected.detach(), **TOL)
        assert got[-1].item() == pytest.approx(scale, rel=1e-12, abs=1e-12)


def test_hand_worked_scale() -> None:
    """C = 3 centres e1, e2, e3; two samples of class 0 at angles 0.5 and 1.2 from e1 towards e2. Their
    other classes' cosines are (sin 0.5, 0) and (sin 1.2, 0), so with s0 = √2·log 2,
    ``B_avg = (e^{s0·sin 0.5} + 1 + e^{s0·sin 1.2} + 1)/2``; θ_med is the lower middle angle, 0.5 (not the
    mean 0.85), so ``s1 = log B_avg / cos 0.5``. A second step at angles 1.0 and 1.3 clips θ_med = 1.0 to π/4."""
    head = create_head("adacos", 3, 3).double()
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(3))

    def samples(*angles: float) -> Tensor:
        return torch.tensor([[math.cos(a), math.sin(a), 0.0] for a in angles], dtype=torch.float64)

    labels = torch.tensor([0, 0])
    s0 = math.sqrt(2) * math.log(2)
    out = head(samples(0.5, 1.2), labels)
    s1 = math.log((math.exp(s0 * math.sin(0.5)) + math.exp(s0 * math.sin(1.2)) + 2) / 2) / math.cos(0.5)
    assert head.margin.scale.item() == pytest.approx(s1, rel=1e-12)
    torch.testing.assert_close(
        out.logits[1], s1 * torch.tensor([math.cos(1.2), math.sin(1.2), 0.0], dtype=torch.float64), **TOL
    )
    head(samples(1.0, 1.3), labels)
    s2 = math.log((math.exp(s1 * math.sin(1.0)) + math.exp(s1 * math.sin(1.3)) + 2) / 2) / math.cos(math.pi / 4)
    assert head.margin.scale.item() == pytest.approx(s2, rel=1e-12)


def test_eval_and_fixed_scale_do_not_update() -> None:
    x, labels = batches()[0]
    static = adacos_head(dynamic=False)
    static(x, labels)
    assert static.margin.scale.item() == pytest.approx(FIXED, rel=1e-15)
    head = adacos_head()
    head(x, labels)
    trained = head.margin.scale.item()
    assert trained != pytest.approx(FIXED)
    out = head.eval()(x, labels)
    assert head.margin.scale.item() == trained
    torch.testing.assert_close(out.logits, trained * F.normalize(x, dim=1) @ F.normalize(head.weight, dim=1).T)


def test_scale_is_restored_from_a_state_dict() -> None:
    head = adacos_head()
    head(*batches()[0])
    restored = adacos_head()
    restored.load_state_dict(head.state_dict())
    assert restored.margin.scale.item() == head.margin.scale.item()
    restored(*batches()[1])
    head(*batches()[1])
    assert restored.margin.scale.item() == head.margin.scale.item()


def test_partial_fc_at_full_rate_equals_the_full_classifier() -> None:
    full, partial = adacos_head(), adacos_head(classifier={"name": "partial_fc", "sample_rate": 1.0})
    partial.load_state_dict(full.state_dict())  # the same centres (Partial FC draws its own per block)
    for x, labels in batches():
        for got, want in zip(step(partial, x, labels), step(full, x, labels), strict=True):
            torch.testing.assert_close(got, want, **TOL)


def sampled_classes(head) -> Tensor:
    """The classes (sorted) whose centres the last forward of a one-process Partial FC head sampled."""
    return head.classifier.sampled.rows.sort().values + head.classifier.class_start


def test_sampled_columns_sum_is_rescaled_to_all_classes() -> None:
    """With r = 0.5 the n sampled columns stand for all C: B_avg is the sampled sum times (C − 1)/(n − 1)."""
    head = adacos_head(classifier={"name": "partial_fc", "sample_rate": 0.5})
    x, labels = batches()[0]
    labels = labels % 4  # 4 batch classes, 6 columns: 2 sampled at random
    got = step(head, x, labels)
    classes = sampled_classes(head)
    assert len(classes) == 6
    weight = head.classifier.weight.detach()[classes]
    local = torch.searchsorted(classes, labels)
    loss, logits, new_scale = reference_step(x, local, weight, FIXED, coverage=(C - 1) / (6 - 1))
    torch.testing.assert_close(got[0], loss, **TOL)
    torch.testing.assert_close(got[1], logits, **TOL)
    assert got[-1].item() == pytest.approx(new_scale, rel=1e-12)
    assert all(torch.isfinite(value).all() for value in got)


def test_too_few_classes_are_refused() -> None:
    head = create_head("adacos", E, 2)
    with pytest.raises(ValueError, match="adacos needs at least 3 classes"):
        head(torch.randn(2, E), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"head\.margin\.dynamic"):
        create_head("adacos", E, C, dynamic="yes")
    assert isinstance(create_head("adacos", E, C).margin, AdaCos)


def _two_ranks(rank: int, port: int) -> None:
    """Rank ``rank`` of 2 (gloo): at r = 1 each rank's loss, scale and gradients over its shard equal the full
    head's on the global batch for two steps; at r = 0.5 both ranks hold the same scale, the reference's over
    the union of their sampled columns, rescaled."""
    torch.set_num_threads(1)
    full = adacos_head()
    partial = adacos_head(classifier={"name": "partial_fc"})  # one process' head, sharded below
    sampled = adacos_head(classifier={"name": "partial_fc", "sample_rate": 0.5})
    for head in (partial, sampled):
        head.load_state_dict(full.state_dict())  # the same centres
    expected = [step(full, x, labels) for x, labels in batches()]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        mine = slice(4 * rank, 4 * rank + 4)
        partial.classifier.shard(rank, 2)
        rows = slice(partial.classifier.class_start, partial.classifier.class_end)
        for (x, labels), want in zip(batches(), expected, strict=True):
            loss, _, grad_x, grad_w, scale = step(partial, x[mine], labels[mine])
            for got, value in ((loss, want[0]), (grad_x, want[2][mine]), (grad_w, want[3][rows]), (scale, want[4])):
                torch.testing.assert_close(got, value, **TOL)
        sampled.classifier.shard(rank, 2)
        torch.manual_seed(rank)
        x, labels = batches()[0]
        labels = torch.tensor([0, 1, 6, 7, 0, 1, 6, 7])
        step(sampled, x[mine], labels[mine])
        everyone = [None, None]
        dist.all_gather_object(everyone, (sampled_classes(sampled), sampled.margin.scale.item()))
        assert everyone[0][1] == everyone[1][1], "the same scale on every rank"
        classes = torch.cat([everyone[0][0], everyone[1][0]])
        weight = full.classifier.weight.detach()[classes]
        coverage = (C - 1) / (len(classes) - 1)
        _, _, new_scale = reference_step(x, torch.searchsorted(classes, labels), weight, FIXED, coverage)
        assert everyone[rank][1] == pytest.approx(new_scale, rel=1e-12)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_two_ranks, args=(port,), nprocs=2)


def composed_head(*overrides: str):
    """``conf/train.yaml`` composed with ``overrides``; its head built for E, C."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return build_head(OmegaConf.to_container(cfg.head, resolve=True), E, C)


def test_head_config_and_small_data_preset() -> None:
    for overrides in (["head=adacos"], ["experiment=small_data", "head=adacos"]):
        head = composed_head(*overrides)
        assert isinstance(head.margin, AdaCos) and head.margin.dynamic
