"""Training order and augmentation streams are functions of (seed, epoch, rank) only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from facerec.data import FaceDataModule
from facerec.data.training.sampling import EpochSeededDistributedSampler, EpochSeededSampler, stream_seed


class RecordingTransform:
    """Stands in for an albumentations ``Compose``: remembers the seeds it was given."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def set_random_seed(self, seed: int) -> None:
        self.seeds.append(seed)


class Images:
    def __init__(self, n: int) -> None:
        self.n, self.transform = n, RecordingTransform()

    def __len__(self) -> int:
        return self.n


def test_single_process_order_and_augmentation_depend_only_on_seed_and_epoch():
    def run(epoch: int) -> tuple[list[int], int]:
        images = Images(10)
        sampler = EpochSeededSampler(images, seed=7)
        sampler.set_epoch(epoch)
        return list(sampler), images.transform.seeds[-1]

    assert run(3) == run(3)
    assert run(3)[0] != run(4)[0] and run(3)[1] != run(4)[1]
    assert sorted(run(3)[0]) == list(range(10))


def test_ranks_split_the_data_and_draw_distinct_augmentations():
    images = [Images(11), Images(11)]
    samplers = [EpochSeededDistributedSampler(images[r], num_replicas=2, rank=r, seed=7) for r in range(2)]
    for sampler in samplers:
        sampler.set_epoch(5)
    orders = [list(sampler) for sampler in samplers]
    assert len(orders[0]) == len(orders[1]) == 6  # 11 padded to 12
    assert set(orders[0]) | set(orders[1]) == set(range(11))
    seeds = [image.transform.seeds[-1] for image in images]
    assert seeds == [stream_seed(7, 5, 0), stream_seed(7, 5, 1)] and seeds[0] != seeds[1]


def test_a_resumed_rank_repeats_its_epoch():
    fresh, resumed = Images(9), Images(9)
    first = EpochSeededDistributedSampler(fresh, num_replicas=3, rank=2, seed=1)
    for epoch in range(3):
        first.set_epoch(epoch)
        expected = list(first)
    second = EpochSeededDistributedSampler(resumed, num_replicas=3, rank=2, seed=1)
    second.set_epoch(2)
    assert list(second) == expected and resumed.transform.seeds == fresh.transform.seeds[-1:]


@pytest.mark.parametrize(("world_size", "sampler_type"), [(1, EpochSeededSampler), (2, EpochSeededDistributedSampler)])
def test_datamodule_picks_the_sampler_for_the_world_size(world_size, sampler_type):
    datamodule = FaceDataModule(image_size=(32, 32), batch_size=2, num_workers=0)
    datamodule.train_set = Images(8)
    datamodule.trainer = SimpleNamespace(world_size=world_size, global_rank=world_size - 1)
    sampler = datamodule.train_dataloader().sampler
    assert isinstance(sampler, sampler_type)
