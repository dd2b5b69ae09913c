"""A head with a Partial FC classifier equals it with the full one on the global batch (1 and 2 gloo
processes, r = 1), and with r < 1 equals the full classifier restricted to the sampled classes.

Every registered margin is checked (a new one is picked up without editing this file), and ArcFace with
sub-centres. ArcFace + center loss (``arcface_center``) is checked through a whole step: loss, gradients
(embeddings, class centres, ``update="sgd"`` centre-loss centres) and the centre-loss centres after the
post-step hook.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.distributed as dist

from facerec.heads import CenterLoss, Head, PartialFC, build_head, create_head, list_margins
from facerec.heads.classifiers.partial_fc_checkpoint import CHECKPOINT_KEY, take_rows
from facerec.heads.classifiers.sharded_clipping import clip_grad_norm_sharded_
from tests.helpers import free_port, spawn

# Heads without a centre loss (every registered margin, and sub-center ArcFace); arcface_center (one with) is
# checked through a whole step.
HEAD_KWARGS = {name: {"name": name} for name in list_margins(facerec_only=True)} | {
    "subcenter_arcface": {"name": "arcface", "subcenters": 3},
    "mv_arc": {"name": "mv_softmax", "base": "arc"},  # variants whose math differs from their margin's defaults
    "elastic_cos_plus": {"name": "elasticface", "kind": "cos", "plus": True},
}
MARGIN_HEADS = sorted(HEAD_KWARGS)
CENTER_HEAD_KWARGS = {"name": "arcface", "scale": 30.0}
"""``arcface_center`` in :func:`build`: ArcFace (s = 30) with the center term of :func:`center_term`."""
CENTER_VARIANTS = [(center_on, update) for center_on in ("normalized", "raw") for update in ("paper", "sgd")]
E, C, B = 6, 7, 8


def build(name: str, num_classes: int = C, **options) -> Head:
    """The head ``name`` of :data:`HEAD_KWARGS` (or ``arcface_center``) with ``num_classes`` classes."""
    if name == "arcface_center":
        return create_head(
            **CENTER_HEAD_KWARGS, embedding_size=E, num_classes=num_classes, **options, terms=center_term()
        )
    return create_head(**HEAD_KWARGS[name], embedding_size=E, num_classes=num_classes, **options)


def center_term(**options) -> dict:
    """``terms`` of ``arcface_center``: center loss on normalized features, λ = 0.2 unless ``options`` say."""
    options = {"weight": 0.2, "center_on": "normalized", **options}
    return {"center": functools.partial(CenterLoss, **options)}


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, E, generator=generator, dtype=torch.float64) * 3
    return x, torch.randint(0, C, (B,), generator=generator)


def with_partial_fc(head: Head, rank: int = 0, world_size: int = 1, **options) -> Head:
    """A copy of a head whose classifier is a :class:`PartialFC` built with ``options`` and the same centres,
    sharded for ``rank`` of ``world_size``."""
    copied = copy.deepcopy(head)
    full = head.classifier
    classifier = PartialFC(
        full.embedding_size, full.num_classes, full.rows_per_class, full.has_bias, rank=0, world_size=1, **options
    )
    classifier.weight = torch.nn.Parameter(full.weight.detach().clone())
    classifier.shard(rank, world_size)
    copied.classifier = classifier
    return copied


def plain_and_partial(name: str) -> tuple[Head, Head]:
    torch.manual_seed(0)
    plain = build(name).double()
    return plain, with_partial_fc(plain)


def center_heads(center_on: str, update: str) -> tuple[Head, Head]:
    """A plain ``arcface_center`` head with random centre-loss centres and a copy with Partial FC (1 process)."""
    torch.manual_seed(0)
    plain = create_head("arcface", E, C, scale=30.0, terms=center_term(update=update, center_on=center_on)).double()
    with torch.no_grad():
        plain.terms["center"].centers.normal_()
    return plain, with_partial_fc(plain)


def center_step(head: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Forward, backward and post-step hook (collective under a process group); what the step produced."""
    x = x.clone().requires_grad_(True)
    loss = head(x, labels).loss
    loss.backward()
    centers = head.terms["center"].centers
    head.after_optimizer_step()
    return {
        "loss": loss.detach(),
        "grad x": x.grad,
        "grad weight": head.classifier.weight.grad,
        "grad centers": centers.grad,
        "centers": centers.detach().clone(),
    }


def sampled_and_sub_problem(name: str, rank: int = 0, world_size: int = 1, seed: int = 0):
    """A Partial FC head at r = 0.5 and a function building the plain head of the classes it sampled.

    ``sub_problem(classes)`` is the plain head restricted to the sorted global ``classes`` (their
    centres, and centre-loss centres), the softmax Partial FC computes when it samples them.
    """
    torch.manual_seed(0)
    plain = build(name).double()
    if name == "arcface_center":
        with torch.no_grad():
            plain.terms["center"].centers.normal_()
    sampled = with_partial_fc(plain, sample_rate=0.5, rank=rank, world_size=world_size)
    sampled.classifier.embedding_grad_scale = float(world_size)

    def sub_problem(classes: torch.Tensor) -> Head:
        torch.manual_seed(0)
        sub = build(name, len(classes)).double()
        rows = sampled.classifier.centre_rows(classes)
        with torch.no_grad():
            sub.classifier.weight.copy_(plain.classifier.weight[rows])
            if name == "arcface_center":
                sub.terms["center"].centers.copy_(plain.terms["center"].centers[classes])
        return sub

    torch.manual_seed(seed)
    return sampled, sub_problem


def sampled_classes(partial: torch.nn.Module) -> torch.Tensor:
    """The global classes whose centres the head's last forward sampled, sorted."""
    classifier = partial.classifier
    rows = classifier.sampled.rows.view(-1, classifier.rows_per_class)[:, 0]
    return (rows // classifier.rows_per_class + classifier.class_start).sort().values


def loss_and_grads(head, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    loss = head(x, labels).loss
    loss.backward()
    return loss.detach(), x.grad, head.classifier.weight.grad


@pytest.mark.parametrize("name", MARGIN_HEADS)
def test_one_process_full_rate_equals_the_plain_head(name):
    plain, partial = plain_and_partial(name)
    x, labels = batch()
    expected, partial_out = loss_and_grads(plain, x, labels), loss_and_grads(partial, x, labels)
    for want, got in zip(expected, partial_out, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("center_on", "update"), CENTER_VARIANTS)
def test_one_process_full_rate_equals_the_plain_head_with_center_loss(center_on, update):
    plain, partial = center_heads(center_on, update)
    initial = plain.terms["center"].centers.detach().clone()
    x, labels = batch()
    expected, got = center_step(plain, x, labels), center_step(partial, x, labels)
    assert (expected["grad centers"] is None) == (update == "paper")
    assert (update == "paper") != torch.equal(expected["centers"], initial), "only the paper rule moves them here"
    for key, want in expected.items():
        torch.testing.assert_close(got[key], want, rtol=1e-12, atol=1e-12, msg=key)


def sampling(name: str) -> str:
    """How the head's margin takes Partial FC's sampling: ``exact``, ``estimate`` or ``refused``."""
    return build(name).margin.sampling


@pytest.mark.parametrize("name", [name for name in MARGIN_HEADS if sampling(name) == "refused"])
def test_a_margin_that_needs_every_class_refuses_sampling_when_built(name):
    with pytest.raises(ValueError, match="needs every class.*classifier.sample_rate=1.0"):
        build(name, classifier={"name": "partial_fc", "sample_rate": 0.5})
    assert build(name, classifier={"name": "partial_fc", "sample_rate": 1.0}).margin.sampling == "refused"


@pytest.mark.parametrize("name", [name for name in [*MARGIN_HEADS, "arcface_center"] if sampling(name) != "refused"])
def test_one_process_sampled_rate_trains_the_sampled_centres_as_their_plain_head(name):
    """``exact`` margins equal their plain head on the sampled classes; ``estimate`` ones (a statistic over all
    classes, estimated from the sampled ones: AdaCos, tested in its own file) train the sampled centres only."""
    partial, sub_problem = sampled_and_sub_problem(name)
    x, labels = batch()
    x = x.requires_grad_(True)
    loss = partial(x, labels).loss
    loss.backward()
    classes = sampled_classes(partial)
    assert len(classes) == max(4, len(labels.unique())) and set(labels.tolist()) <= set(classes.tolist())
    sub = sub_problem(classes)
    sub_x = x.detach().clone().requires_grad_(True)
    expected = sub(sub_x, torch.searchsorted(classes, labels)).loss
    expected.backward()
    sub_grad = sub.classifier.weight.grad
    if partial.margin.sampling == "exact":
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad, sub_x.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(partial.classifier.sampled.param.grad, sub_grad, rtol=1e-12, atol=1e-12)
    else:
        sub_grad = partial.classifier.sampled.param.grad
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(sub_grad).all()
    weight = partial.classifier.weight
    assert weight.grad is None, "the whole centre matrix gets no gradient"

    before = weight.detach().clone()
    optimizer = torch.optim.SGD(partial.param_groups(), lr=0.1, momentum=0.9)
    partial.before_optimizer_step(optimizer)
    optimizer.step()
    partial.after_optimizer_step()
    rows = partial.classifier.centre_rows(classes)
    others = torch.ones(len(before), dtype=torch.bool).index_fill_(0, rows, False)
    assert others.any() and torch.equal(weight.detach()[others], before[others]), "only sampled ones move"
    torch.testing.assert_close(weight.detach()[rows], before[rows] - 0.1 * sub_grad)
    assert optimizer.state[weight]["momentum_buffer"].shape == weight.shape


def test_center_loss_hooks_are_forwarded():
    _, sgd = center_heads("normalized", "sgd")
    centers = sgd.terms["center"].centers
    groups = sgd.param_groups()
    assert [g["params"] for g in groups] == [[sgd.classifier.weight], [centers]]
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (0.5 / 0.2, 0.0)
    _, paper = center_heads("normalized", "paper")
    before = paper.terms["center"].centers.clone()
    paper(*batch())
    paper.after_optimizer_step(skipped=True)
    paper.after_optimizer_step()
    assert torch.equal(paper.terms["center"].centers, before), "a skipped step's batch is dropped"
    assert [g["params"] for g in paper.param_groups()] == [[paper.classifier.weight]]


def parameters_with_gradients() -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """A (3, 2) parameter and a (C, E) one, both with the same random gradients on every rank."""
    generator = torch.Generator().manual_seed(1)
    params = torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(C, E))
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator, dtype=torch.float64).float()
    return params


def check_sharded_clipping(rank: int, world_size: int, max_norm: float = 0.5) -> None:
    """Clipping with rank ``rank``'s rows of the (C, E) parameter equals torch's clipping with all of them."""
    replicated, full = parameters_with_gradients()
    expected = torch.nn.utils.clip_grad_norm_([replicated, full], max_norm)
    rows = torch.arange(C).chunk(world_size)[rank]
    other, whole = parameters_with_gradients()
    shard = torch.nn.Parameter(whole.detach()[rows])
    shard.grad = whole.grad[rows]
    norm = clip_grad_norm_sharded_([other, shard], shard, max_norm)
    assert norm > max_norm
    torch.testing.assert_close(norm, expected)
    torch.testing.assert_close(other.grad, replicated.grad)
    torch.testing.assert_close(shard.grad, full.grad[rows])


def test_sharded_clipping_without_process_group_is_torchs():
    check_sharded_clipping(0, 1)


def _two_process_worker(rank: int, port: int) -> None:
    x, labels = batch()
    # Before the group exists: the plain head's paper-rule update would all-reduce its statistics.
    expected_center = {variant: center_step(center_heads(*variant)[0], x, labels) for variant in CENTER_VARIANTS}
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        local = slice(rank * B // 2, (rank + 1) * B // 2)
        for name in MARGIN_HEADS:  # two steps: running state (CurricularFace's t, AdaCos' s, ...) follows
            plain, partial = plain_and_partial(name)
            partial.classifier.shard(rank, 2)
            for step in range(2):
                loss, grad_x, grad_w = loss_and_grads(plain, x, labels)
                got_loss, got_x, got_w = loss_and_grads(partial, x[local], labels[local])
                at = f"{name} step {step}"
                torch.testing.assert_close(got_loss, loss, rtol=1e-12, atol=1e-12, msg=f"{at} loss")
                torch.testing.assert_close(got_x, grad_x[local], rtol=1e-12, atol=1e-12, msg=f"{at} grad x")
                want_w = partial.classifier.local_rows(grad_w)
                torch.testing.assert_close(got_w, want_w, rtol=1e-12, atol=1e-12, msg=f"{at} grad w")
                want_state, got_state = plain.margin.state_dict(), partial.margin.state_dict()
                torch.testing.assert_close(got_state, want_state, rtol=1e-12, atol=1e-12, msg=f"{at} state")
                for head in (plain, partial):
                    head.zero_grad()
                    head.after_optimizer_step()
        for variant, want in expected_center.items():
            _, partial = center_heads(*variant)
            partial.classifier.shard(rank, 2)
            partial.classifier.embedding_grad_scale = 2.0  # as under DDP, which averages the replicated gradients
            got = center_step(partial, x[local], labels[local])
            if got["grad centers"] is not None:
                got["grad centers"] = dist_mean(got["grad centers"])
            got["grad x"] = got["grad x"] / 2.0
            local_weight = partial.classifier.local_rows(want["grad weight"])
            want = {**want, "grad x": want["grad x"][local], "grad weight": local_weight}
            for key, value in want.items():
                torch.testing.assert_close(got[key], value, rtol=1e-12, atol=1e-12, msg=f"{variant} {key}")
        for name in [*MARGIN_HEADS, "arcface_center"]:
            if sampling(name) == "exact":
                check_two_process_sampling(name, rank, x, labels, local)
        check_sharded_clipping(rank, 2)
    finally:
        dist.destroy_process_group()


def check_two_process_sampling(name: str, rank: int, x: torch.Tensor, labels: torch.Tensor, local: slice) -> None:
    """At r = 0.5 each rank samples its own shard; together they compute the plain head of the union.

    The loss (equal on both ranks) and the gradients of each rank's sampled centres equal the plain
    head over the global batch restricted to the classes both ranks sampled; the gradient of each
    rank's embeddings is the world size times the plain one (DDP's average over ranks divides it).
    """
    partial, sub_problem = sampled_and_sub_problem(name, rank, 2, seed=rank)
    x_local = x[local].clone().requires_grad_(True)
    loss = partial(x_local, labels[local]).loss
    loss.backward()
    mine = sampled_classes(partial)
    everyone = [None, None]
    dist.all_gather_object(everyone, mine)
    classes = torch.cat(everyone).sort().values
    assert set(labels.tolist()) <= set(classes.tolist()), f"{name}: the global batch's classes are sampled"
    sub = sub_problem(classes)
    sub_x = x.detach().clone().requires_grad_(True)
    expected = sub(sub_x, torch.searchsorted(classes, labels)).loss
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12, msg=f"{name} sampled loss")
    torch.testing.assert_close(x_local.grad / 2, sub_x.grad[local], rtol=1e-12, atol=1e-12, msg=f"{name} grad x")
    sampled = partial.classifier.sampled
    mine_in_union = partial.classifier.centre_rows(torch.searchsorted(classes, mine))
    got = sampled.param.grad[sampled.rows.argsort()]
    want = sub.classifier.weight.grad[mine_in_union]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"{name} grad")


def dist_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of ``tensor``, as DDP averages gradients."""
    total = tensor.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_on_the_global_batch():
    spawn(_two_process_worker, free_port())


def test_sampling_keeps_the_batch_classes_and_rate_of_the_shard():
    torch.manual_seed(0)
    head = create_head("cosface", E, 100, classifier={"name": "partial_fc", "sample_rate": 0.1}).double()
    x, labels = batch()
    labels = labels * 13
    classes, local = head.classifier.sample(labels)
    assert len(classes) == 10 and set(labels.tolist()) <= set(classes.tolist())
    assert torch.equal(classes[local], labels)
    out = head(x.requires_grad_(True), labels)
    assert out.logits.shape == (B, 10)
    out.loss.backward()
    assert torch.isfinite(out.loss) and head.classifier.weight.grad is None
    sampled = head.classifier.sampled.param
    assert sampled.shape == (10, E) and sampled.grad.abs().sum(dim=1).count_nonzero() == 10


def test_shards_are_contiguous_and_cover_every_class():
    head = PartialFC(E, 10, rank=2, world_size=4)
    assert [head.class_range(k, 4) for k in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]  # insightface's sizes
    assert head.weight.shape == (2, E)
    with pytest.raises(ValueError, match="already sharded for rank 2 of 4"):
        head.shard(0, 2)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: PartialFC(E, C, sample_rate=0.0), ValueError, r"head.classifier.sample_rate=0.0 is outside \(0, 1\]"),
        (lambda: PartialFC(E, 3, rank=3, world_size=4), ValueError, "use fewer processes"),
        (
            lambda: create_head("arcface", E, C, classifier={"name": "partial_fc", "rate": 0.1}),
            ValueError,
            r"head.classifier \(PartialFC\) takes no parameter rate; its parameters: sample_rate, rank, world_size",
        ),
        (lambda: create_head("arcface", E, C, classifier={"name": "sampled"}), ValueError, "valid classifiers: full"),
    ],
)
def test_errors_are_explained(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_config_enables_partial_fc():
    head = create_head("arcface", E, C, subcenters=3, classifier={"name": "partial_fc", "sample_rate": 0.5})
    assert isinstance(head.classifier, PartialFC) and head.weight.shape == (3 * C, E)
    assert head.classifier.sample_rate == 0.5
    assert not isinstance(create_head("arcface", E, C, classifier={"name": "full"}).classifier, PartialFC)
    old = {
        "_target_": "facerec.heads.create_head",
        "name": "cosface",
        "partial_fc": {"enabled": True, "sample_rate": 0.25},
    }
    legacy = build_head(old, E, C)  # old checkpoints
    assert isinstance(legacy.classifier, PartialFC) and legacy.classifier.sample_rate == 0.25


def test_partial_fc_shards_a_softmax_head_with_its_bias():
    """Formerly refused (softmax had no margin); now the bias column is sharded with its centre."""
    head = create_head("softmax", E, C, classifier={"name": "partial_fc", "sample_rate": 0.5})
    assert isinstance(head.classifier, PartialFC) and head.classifier.weight.shape == (C, E + 1)
    assert head.weight.shape == (C, E) and head.classifier.bias.shape == (C,)


def test_a_consolidated_checkpoint_reshards_for_another_world_size():
    full = torch.randn(C, E)
    momentum = torch.randn(C, E)
    checkpoint = {
        "state_dict": {"head.classifier.weight": full.clone()},
        "optimizer_states": [{"state": {3: {"momentum_buffer": momentum.clone()}}}],
        CHECKPOINT_KEY: {"optimizer_slot": (0, 3), "sampled_rows": False},
    }
    take_rows(PartialFC(E, C, rank=1, world_size=2), "head.classifier.", checkpoint)
    assert torch.equal(checkpoint["state_dict"]["head.classifier.weight"], full[4:])
    assert torch.equal(checkpoint["optimizer_states"][0]["state"][3]["momentum_buffer"], momentum[4:])


def test_checkpoint_errors_say_how_to_proceed():
    head = PartialFC(E, C, rank=0, world_size=2)
    key = "head.classifier.weight"
    with pytest.raises(ValueError, match="holds 5 centre rows but this head needs 7"):
        take_rows(head, "head.classifier.", {"state_dict": {key: torch.randn(5, E)}})
    plain = {"state_dict": {key: torch.randn(C, E)}, "optimizer_states": [{"state": {}}]}
    with pytest.raises(ValueError, match="resume it with classifier=full"):
        take_rows(head, "head.classifier.", plain)
    plain = {"state_dict": {key: torch.randn(C, E)}, "optimizer_states": [{"state": {}}]}
    every_row = {**plain, CHECKPOINT_KEY: {"optimizer_slot": (0, 0)}}  # r = 1, or facerec before sampled rows
    sampled = PartialFC(E, C, sample_rate=0.5)
    with pytest.raises(ValueError, match=r"no slot for the sampled centres. Resume it with classifier.sample_rate 1.0"):
        take_rows(sampled, "head.classifier.", copy.deepcopy(every_row))
    with_rows = {**plain, CHECKPOINT_KEY: {"optimizer_slot": (0, 0), "sampled_rows": True}}
    with pytest.raises(ValueError, match="Resume it with classifier.sample_rate below 1"):
        take_rows(PartialFC(E, C), "head.classifier.", copy.deepcopy(with_rows))
