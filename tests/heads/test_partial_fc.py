"""A margin head with a Partial FC classifier equals it with the full one on the global batch (1 and 2 gloo
processes, r = 1), and with r < 1 equals the full classifier restricted to the sampled classes.

``arcface_center`` is checked through a whole step: loss, gradients (embeddings, class centres,
``update="sgd"`` centre-loss centres) and the centre-loss centres after the post-step hook.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from facerec.heads import PartialFC, create_head
from facerec.heads.partial_fc import CHECKPOINT_KEY, clip_grad_norm_sharded_, shard_checkpoint
from tests.helpers import free_port, registered_heads, spawn

# The margin heads without a centre loss; arcface_center (one with) is checked through a whole step.
MARGIN_HEADS = registered_heads(margin=True, center_loss=False)
CENTER_VARIANTS = [(center_on, update) for center_on in ("normalized", "raw") for update in ("paper", "sgd")]
E, C, B = 6, 7, 8


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, E, generator=generator, dtype=torch.float64) * 3
    return x, torch.randint(0, C, (B,), generator=generator)


def with_partial_fc(head: torch.nn.Module, **options) -> torch.nn.Module:
    """A copy of a margin head whose classifier is a :class:`PartialFC` built with ``options``."""
    partial = copy.deepcopy(head)
    partial.classifier = PartialFC(partial.classifier, **options)
    return partial


def plain_and_partial(name: str, rank: int | None = None, world_size: int | None = None):
    torch.manual_seed(0)
    plain = create_head(name, E, C).double()
    return plain, with_partial_fc(plain, rank=rank, world_size=world_size)


def center_heads(center_on: str, update: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A plain ``arcface_center`` head with random centre-loss centres and a copy with Partial FC (1 process)."""
    torch.manual_seed(0)
    plain = create_head(
        "arcface_center", E, C, scale=30.0, center_weight=0.2, update=update, center_on=center_on
    ).double()
    with torch.no_grad():
        plain.center_loss.centers.normal_()
    return plain, with_partial_fc(plain, rank=0, world_size=1)


def center_step(head: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Forward, backward and post-step hook (collective under a process group); what the step produced."""
    x = x.clone().requires_grad_(True)
    loss = head(x, labels).loss
    loss.backward()
    centers = head.center_loss.centers
    head.update_after_step()
    return {
        "loss": loss.detach(),
        "grad x": x.grad,
        "grad weight": head.weight.grad,
        "grad centers": centers.grad,
        "centers": centers.detach().clone(),
    }


def sampled_and_sub_problem(name: str, rank: int = 0, world_size: int = 1, seed: int = 0):
    """A Partial FC head at r = 0.5 and a function building the plain head of the classes it sampled.

    ``sub_problem(classes)`` is the plain head restricted to the sorted global ``classes`` (their
    centres, and centre-loss centres), the softmax Partial FC computes when it samples them.
    """
    torch.manual_seed(0)
    kwargs = {"center_weight": 0.2, "scale": 30.0} if name == "arcface_center" else {}
    plain = create_head(name, E, C, **kwargs).double()
    if name == "arcface_center":
        with torch.no_grad():
            plain.center_loss.centers.normal_()
    partial = with_partial_fc(plain, sample_rate=0.5, rank=rank, world_size=world_size)
    partial.classifier.embedding_grad_scale = float(world_size)

    def sub_problem(classes: torch.Tensor) -> torch.nn.Module:
        torch.manual_seed(0)
        sub = create_head(name, E, len(classes), **kwargs).double()
        rows = partial.classifier.centre_rows(classes)
        with torch.no_grad():
            sub.weight.copy_(plain.weight[rows])
            if name == "arcface_center":
                sub.center_loss.centers.copy_(plain.center_loss.centers[classes])
        return sub

    torch.manual_seed(seed)
    return partial, sub_problem


def sampled_classes(partial: torch.nn.Module) -> torch.Tensor:
    """The global classes whose centres the head's last forward sampled, sorted."""
    classifier = partial.classifier
    rows = classifier.sampled.rows.view(-1, classifier.rows_per_class)[:, 0]
    return (rows // classifier.rows_per_class + classifier.class_start).sort().values


def loss_and_grads(head, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    loss = head(x, labels).loss
    loss.backward()
    weight = head.weight if hasattr(head, "weight") else None
    return loss.detach(), x.grad, weight.grad


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
    initial = plain.center_loss.centers.detach().clone()
    x, labels = batch()
    expected, got = center_step(plain, x, labels), center_step(partial, x, labels)
    assert (expected["grad centers"] is None) == (update == "paper")
    assert (update == "paper") != torch.equal(expected["centers"], initial), "only the paper rule moves them here"
    for key, want in expected.items():
        torch.testing.assert_close(got[key], want, rtol=1e-12, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", registered_heads(margin=True))
def test_one_process_sampled_rate_trains_the_sampled_centres_as_their_plain_head(name):
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
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, sub_x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(partial.classifier.sampled.param.grad, sub.weight.grad, rtol=1e-12, atol=1e-12)
    assert partial.weight.grad is None, "the whole centre matrix gets no gradient"

    before = partial.weight.detach().clone()
    optimizer = torch.optim.SGD(partial.param_groups(), lr=0.1, momentum=0.9)
    partial.before_optimizer_step(optimizer)
    optimizer.step()
    partial.update_after_step()
    rows = partial.classifier.centre_rows(classes)
    others = torch.ones(len(before), dtype=torch.bool).index_fill_(0, rows, False)
    assert others.any() and torch.equal(partial.weight.detach()[others], before[others]), "only sampled ones move"
    torch.testing.assert_close(partial.weight.detach()[rows], before[rows] - 0.1 * sub.weight.grad)
    assert optimizer.state[partial.weight]["momentum_buffer"].shape == partial.weight.shape


def test_center_loss_hooks_are_forwarded():
    _, sgd = center_heads("normalized", "sgd")
    centers = sgd.center_loss.centers
    groups = sgd.param_groups()
    assert [g["params"] for g in groups] == [[sgd.weight], [centers]]
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (0.5 / 0.2, 0.0)
    _, paper = center_heads("normalized", "paper")
    before = paper.center_loss.centers.clone()
    paper(*batch())
    paper.update_after_step(skipped=True)
    paper.update_after_step()
    assert torch.equal(paper.center_loss.centers, before), "a skipped step's batch is dropped"
    assert [g["params"] for g in paper.param_groups()] == [[paper.weight]]


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
        for name in MARGIN_HEADS:
            plain, partial = plain_and_partial(name)
            partial.classifier.shard(rank, 2)
            loss, grad_x, grad_w = loss_and_grads(plain, x, labels)
            got_loss, got_x, got_w = loss_and_grads(partial, x[local], labels[local])
            torch.testing.assert_close(got_loss, loss, rtol=1e-12, atol=1e-12, msg=f"{name} loss")
            torch.testing.assert_close(got_x, grad_x[local], rtol=1e-12, atol=1e-12, msg=f"{name} grad x")
            want_w = partial.classifier.local_rows(grad_w)
            torch.testing.assert_close(got_w, want_w, rtol=1e-12, atol=1e-12, msg=f"{name} grad w")
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
        for name in registered_heads(margin=True):
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
    torch.testing.assert_close(got, sub.weight.grad[mine_in_union], rtol=1e-12, atol=1e-12, msg=f"{name} grad")


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
    assert torch.isfinite(out.loss) and head.weight.grad is None
    sampled = head.classifier.sampled.param
    assert sampled.shape == (10, E) and sampled.grad.abs().sum(dim=1).count_nonzero() == 10


def test_shards_are_contiguous_and_cover_every_class():
    head = PartialFC(create_head("arcface", E, 10).classifier, rank=2, world_size=4)
    assert [head.class_range(k, 4) for k in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert head.weight.shape == (3, E)
    with pytest.raises(ValueError, match="already sharded for rank 2 of 4"):
        head.shard(0, 2)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: PartialFC(create_head("softmax", E, C).classifier), TypeError, "shards a margin head's classifier"),
        (lambda: PartialFC(create_head("center", E, C).classifier), TypeError, "softmax and center have no margin"),
        (
            lambda: PartialFC(create_head("arcface", E, C).classifier, sample_rate=0.0),
            ValueError,
            r"sample_rate must be in \(0, 1\]",
        ),
        (
            lambda: PartialFC(create_head("arcface", E, 3).classifier, rank=3, world_size=4),
            ValueError,
            "use fewer processes",
        ),
        (
            lambda: create_head("arcface", E, C, classifier={"name": "partial_fc", "rate": 0.1}),
            ValueError,
            "classifier partial_fc takes no options",
        ),
        (lambda: create_head("arcface", E, C, classifier={"name": "sampled"}), ValueError, "valid classifiers: full"),
    ],
)
def test_errors_are_explained(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_config_enables_partial_fc():
    head = create_head("subcenter_arcface", E, C, classifier={"name": "partial_fc", "sample_rate": 0.5})
    assert isinstance(head.classifier, PartialFC) and head.weight.shape == (3 * C, E)
    assert head.classifier.sample_rate == 0.5
    assert not isinstance(create_head("arcface", E, C, classifier={"name": "full"}).classifier, PartialFC)
    legacy = create_head("cosface", E, C, partial_fc={"enabled": True, "sample_rate": 0.25})  # old checkpoints
    assert isinstance(legacy.classifier, PartialFC) and legacy.classifier.sample_rate == 0.25


def test_partial_fc_asked_of_a_head_without_margin_warns_and_keeps_every_centre(caplog):
    head = create_head("softmax", E, C, classifier={"name": "partial_fc", "sample_rate": 0.5})
    assert not isinstance(head.classifier, PartialFC) and head.weight.shape == (C, E)
    assert "classifier=partial_fc needs a margin head; head softmax has none" in caplog.text


def test_a_consolidated_checkpoint_reshards_for_another_world_size():
    full = torch.randn(C, E)
    momentum = torch.randn(C, E)
    checkpoint = {
        "state_dict": {"head.weight": full.clone()},
        "optimizer_states": [{"state": {3: {"momentum_buffer": momentum.clone()}}}],
        CHECKPOINT_KEY: {"optimizer_slot": (0, 3)},
    }
    shard_checkpoint(PartialFC(create_head("arcface", E, C).classifier, rank=1, world_size=2), "head.", checkpoint)
    assert torch.equal(checkpoint["state_dict"]["head.weight"], full[4:])
    assert torch.equal(checkpoint["optimizer_states"][0]["state"][3]["momentum_buffer"], momentum[4:])


def test_checkpoint_errors_say_how_to_proceed():
    head = PartialFC(create_head("arcface", E, C).classifier, rank=0, world_size=2)
    with pytest.raises(ValueError, match="holds 5 centre rows but this head needs 7"):
        shard_checkpoint(head, "head.", {"state_dict": {"head.weight": torch.randn(5, E)}})
    plain = {"state_dict": {"head.weight": torch.randn(C, E)}, "optimizer_states": [{"state": {}}]}
    with pytest.raises(ValueError, match="resume it with classifier=full"):
        shard_checkpoint(head, "head.", plain)
    plain = {"state_dict": {"head.weight": torch.randn(C, E)}, "optimizer_states": [{"state": {}}]}
    every_row = {**plain, CHECKPOINT_KEY: {"optimizer_slot": (0, 0)}}  # r = 1, or facerec before sampled rows
    sampled = PartialFC(create_head("arcface", E, C).classifier, sample_rate=0.5)
    with pytest.raises(ValueError, match=r"no slot for the sampled centres. Resume it with classifier.sample_rate 1.0"):
        shard_checkpoint(sampled, "head.", copy.deepcopy(every_row))
    with_rows = {**plain, CHECKPOINT_KEY: {"optimizer_slot": (0, 0), "sampled_rows": True}}
    with pytest.raises(ValueError, match="Resume it with classifier.sample_rate below 1"):
        shard_checkpoint(PartialFC(create_head("arcface", E, C).classifier), "head.", copy.deepcopy(with_rows))
