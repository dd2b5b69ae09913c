"""Partial FC across world sizes: each rank creates only its centres (the same ones at any world size), samples
as insightface's ``PartialFC_V2`` does for the same seed, and its checkpoints re-shard: shard files written by
W ranks are read back by any other W (here without processes; ``tests/test_partial_fc_module.py`` runs it under
Lightning with gloo)."""

from __future__ import annotations

import copy

import pytest
import torch

from facerec.distributed import planned_rank
from facerec.errors import CheckpointError
from facerec.heads import PartialFC
from facerec.heads.classifiers.partial_fc import shard_range
from facerec.heads.classifiers.partial_fc_checkpoint import (
    CHECKPOINT_KEY,
    SHARD_KEY,
    consolidate,
    prepare_save,
    remove_stale_shards,
    shard_directory,
    take_rows,
    write_shard,
)
from facerec.heads.classifiers.seeded_rows import BLOCK_ROWS

E = 4
KEY = "head.classifier.weight"


def shards(num_classes: int, world_size: int, seed: int = 0, **options) -> list[PartialFC]:
    """Every rank's classifier of one run (the same seed on each rank, as after ``seed_everything``)."""
    ranks = []
    for rank in range(world_size):
        torch.manual_seed(seed)
        ranks.append(PartialFC(E, num_classes, rank=rank, world_size=world_size, **options))
    return ranks


@pytest.mark.parametrize("options", [{}, {"linear_init": True}, {"bias": True}, {"rows_per_class": 3}])
def test_the_same_seed_gives_the_same_centres_at_any_world_size(options):
    num_classes = BLOCK_ROWS // 2 + 5  # sub-centres: shards cross a generator block
    whole = shards(num_classes, 1, **options)[0].weight
    assert whole.shape == (num_classes * options.get("rows_per_class", 1), E + int(options.get("bias", False)))
    for world_size in (2, 3):
        joined = torch.cat([rank.weight for rank in shards(num_classes, world_size, **options)])
        assert torch.equal(joined, whole), f"world size {world_size}"
    assert not torch.equal(shards(num_classes, 1, seed=1, **options)[0].weight, whole), "another seed, other centres"
    if options.get("bias"):
        assert torch.all(whole[:, E] == 0)
    if options.get("linear_init"):
        assert whole.abs().max() <= 1 / E**0.5


def test_a_rank_creates_only_its_own_centres():
    """A trillion classes (16 TB of centres in one matrix): rank 7 of 10⁸ creates its 10⁴ rows and nothing more."""
    classifier = PartialFC(E, 10**12, rank=7, world_size=10**8)
    assert classifier.weight.shape == (10**4, E)
    assert (classifier.class_start, classifier.class_end) == (7 * 10**4, 8 * 10**4)


def test_the_planned_rank_shards_a_head_built_before_the_process_group():
    torch.manual_seed(0)
    with planned_rank(1, 3):
        classifier = PartialFC(E, 10)
    assert (classifier.rank, classifier.world_size, classifier.class_start, classifier.class_end) == (1, 3, 4, 7)
    assert torch.equal(classifier.weight, shards(10, 3)[1].weight)
    assert PartialFC(E, 10).world_size == 1, "outside the block: one process"


def insightface_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """``PartialFC_V2.__init__``'s ``class_start`` and ``class_start + num_local``."""
    num_local = num_classes // world_size + int(rank < num_classes % world_size)
    class_start = num_classes // world_size * rank + min(rank, num_classes % world_size)
    return class_start, class_start + num_local


def insightface_sample(labels: torch.Tensor, class_start: int, num_local: int, sample_rate: float) -> torch.Tensor:
    """``PartialFC_V2.sample``'s ``weight_index`` for the global batch's ``labels`` (its rule, on the CPU)."""
    local = labels.view(-1, 1).clone()
    positive_mask = (class_start <= local) & (local < class_start + num_local)
    local[~positive_mask] = -1
    local[positive_mask] -= class_start
    num_sample = int(sample_rate * num_local)
    positive = torch.unique(local[positive_mask], sorted=True)
    if num_sample - positive.size(0) >= 0:
        perm = torch.rand(size=[num_local])
        perm[positive] = 2.0
        return torch.topk(perm, k=num_sample)[1].sort()[0]
    return positive


@pytest.mark.parametrize("num_classes", [1, 7, 10, 1000, 1003])
def test_shards_are_sized_as_insightface_sizes_them(num_classes):
    for world_size in range(1, min(num_classes, 9) + 1):
        ranges = [shard_range(num_classes, rank, world_size) for rank in range(world_size)]
        assert ranges == [insightface_range(num_classes, rank, world_size) for rank in range(world_size)]


@pytest.mark.parametrize("sample_rate", [0.1, 0.3])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sampling_picks_insightfaces_classes_for_the_same_seed(sample_rate, world_size):
    """Batches with few and with more positives than ``int(r·shard)`` (then only the positives)."""
    num_classes = 1000
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, num_classes, (size,), generator=generator) for size in (8, 64, 400)]
    for rank, classifier in enumerate(shards(num_classes, world_size, sample_rate=sample_rate)):
        start, end = insightface_range(num_classes, rank, world_size)
        for step, labels in enumerate(batches):
            torch.manual_seed(100 + step)
            want = insightface_sample(labels, start, end - start, sample_rate)
            torch.manual_seed(100 + step)
            classes, local_labels = classifier.sample(labels)
            assert torch.equal(classes, want), f"rank {rank} batch {step}"
            on_shard = (labels >= start) & (labels < end)
            assert torch.equal(classes[local_labels[on_shard]], labels[on_shard] - start)
            assert torch.all(local_labels[~on_shard] == -1)


def trained_checkpoint(classifier: PartialFC) -> tuple[dict, torch.optim.Optimizer]:
    """A checkpoint dict after one SGD step with momentum on ``classifier`` (its optimizer state in slot (0, 1))."""
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": list(net.parameters())}, *classifier.param_groups()], lr=0.1, momentum=0.9)
    classifier.weight.grad = torch.randn_like(classifier.weight)
    for param in net.parameters():
        param.grad = torch.randn_like(param)
    optimizer.step()
    state_dict = {KEY: classifier.weight.detach().clone(), "net.weight": net.weight.detach().clone()}
    return {"state_dict": state_dict, "optimizer_states": [copy.deepcopy(optimizer.state_dict())]}, optimizer


def save_sharded(path, world_size: int, num_classes: int = 10, save_id: str = "save1") -> tuple[dict, torch.Tensor]:
    """Writes a checkpoint of ``world_size`` ranks as the strategy does; rank 0's checkpoint dict and the whole
    centres' momentum."""
    momenta, main = [], None
    for classifier in shards(num_classes, world_size):
        checkpoint, optimizer = trained_checkpoint(classifier)
        momenta.append(optimizer.state[classifier.weight]["momentum_buffer"].clone())
        prepare_save(classifier, "head.classifier.", checkpoint, [optimizer])
        assert KEY not in checkpoint["state_dict"] and SHARD_KEY in checkpoint
        write_shard(checkpoint, path, save_id)
        main = main or checkpoint
    torch.save(main, path)
    return main, torch.cat(momenta)


def test_one_process_writes_an_ordinary_checkpoint():
    classifier = shards(10, 1)[0]
    checkpoint, optimizer = trained_checkpoint(classifier)
    prepare_save(classifier, "head.classifier.", checkpoint, [optimizer])
    assert SHARD_KEY not in checkpoint and checkpoint["state_dict"][KEY].shape == (10, E)
    assert checkpoint[CHECKPOINT_KEY] == {"optimizer_slot": (0, 2), "sampled_rows": False, "weight_key": KEY}


@pytest.mark.parametrize(("written", "read"), [(2, 1), (2, 3), (3, 2), (1, 3)])
def test_shards_of_one_world_size_resume_at_another(tmp_path, written, read):
    path = tmp_path / "last.ckpt"
    if written == 1:
        whole = shards(10, 1)[0]
        checkpoint, optimizer = trained_checkpoint(whole)
        prepare_save(whole, "head.classifier.", checkpoint, [optimizer])
        torch.save(checkpoint, path)
        momentum = optimizer.state[whole.weight]["momentum_buffer"]
    else:
        _, momentum = save_sharded(path, written)
        assert sorted(p.name for p in (shard_directory(path) / "save1").iterdir()) == [
            f"rank{rank:05d}.pt" for rank in range(written)
        ]
    centres = torch.cat([trained_checkpoint(c)[0]["state_dict"][KEY] for c in shards(10, written)])
    for rank, classifier in enumerate(shards(10, read)):
        loaded = torch.load(path, weights_only=True)
        take_rows(classifier, "head.classifier.", loaded, path)
        rows = slice(*classifier.class_range(rank, read))
        assert torch.equal(loaded["state_dict"][KEY], centres[rows])
        assert torch.equal(loaded["optimizer_states"][0]["state"][2]["momentum_buffer"], momentum[rows])


def test_consolidate_gives_what_one_process_writes(tmp_path):
    path = tmp_path / "sharded.ckpt"
    _, momentum = save_sharded(path, 3)
    checkpoint = torch.load(path, weights_only=True)
    consolidate(checkpoint, path)
    centres = torch.cat([trained_checkpoint(c)[0]["state_dict"][KEY] for c in shards(10, 3)])
    assert torch.equal(checkpoint["state_dict"][KEY], centres)
    assert torch.equal(checkpoint["optimizer_states"][0]["state"][2]["momentum_buffer"], momentum)
    assert "shards" not in checkpoint[CHECKPOINT_KEY]
    with pytest.raises(ValueError, match="written by one process"):
        consolidate(checkpoint, path)


def test_missing_mixed_or_incomplete_shards_are_refused(tmp_path):
    path = tmp_path / "a.ckpt"
    save_sharded(path, 2)
    folder = shard_directory(path) / "save1"
    (folder / "rank00001.pt").rename(tmp_path / "kept.pt")
    classifier = shards(10, 1)[0]
    with pytest.raises(CheckpointError, match=r"rank00001.pt is missing.*copy that folder with the checkpoint"):
        take_rows(classifier, "head.classifier.", torch.load(path, weights_only=True), path)
    other = tmp_path / "b.ckpt"
    save_sharded(other, 2, save_id="save1")
    checkpoint = torch.load(other, weights_only=True)
    checkpoint[CHECKPOINT_KEY]["shards"]["save_id"] = "save2"
    with pytest.raises(CheckpointError, match="belongs to another save"):
        take_rows(classifier, "head.classifier.", checkpoint, other)
    (tmp_path / "kept.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "kept.pt").rename(folder / "rank00001.pt")
    with pytest.raises(CheckpointError, match="cannot be read as a centre shard"):
        take_rows(classifier, "head.classifier.", torch.load(path, weights_only=True), path)
    with pytest.raises(ValueError, match="holds 10 centre rows but this head needs 12"):
        take_rows(shards(12, 1)[0], "head.classifier.", torch.load(other, weights_only=True), other)


def test_removing_a_checkpoint_removes_its_shards_and_only_stale_saves_go(tmp_path):
    path = tmp_path / "last.ckpt"
    save_sharded(path, 2, save_id="old")
    save_sharded(path, 2, save_id="new")
    remove_stale_shards(path, keep="new")
    assert [p.name for p in shard_directory(path).iterdir()] == ["new"]
    take_rows(shards(10, 1)[0], "head.classifier.", torch.load(path, weights_only=True), path)
    remove_stale_shards(path, keep=None)
    assert not shard_directory(path).exists()
