"""Training order and augmentation that depend only on (seed, epoch[, rank]), so a resumed run repeats them."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DistributedSampler, RandomSampler, get_worker_info


def stream_seed(*keys: int) -> int:
    """32-bit seed from ``keys`` (e.g. seed, epoch, rank); distinct keys give unrelated streams."""
    return int(np.random.SeedSequence([int(key) for key in keys]).generate_state(1)[0])


def reseed_transform(dataset: object, seed: int) -> None:
    """Reseeds the dataset's albumentations ``transform``, if it has one."""
    transform = getattr(dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


class EpochSeededSampler(RandomSampler):
    """Permutation from ``seed + epoch``; ``set_epoch`` also reseeds the dataset's transform from (seed, epoch).

    Lightning calls ``set_epoch`` every epoch, also after resuming, so a resumed run repeats the batches.
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation and augmentation stream of ``epoch``."""
        self.epoch = epoch
        reseed_transform(self.data_source, stream_seed(self.seed, epoch))

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class EpochSeededDistributedSampler(DistributedSampler):
    """Shuffling ``DistributedSampler`` (order from ``seed + epoch``) that reseeds this rank's transform from
    (seed, epoch, rank): resumed DDP runs repeat, ranks differ. Lightning keeps a sampler it is given.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation and this rank's augmentation stream of ``epoch``."""
        super().set_epoch(epoch)
        reseed_transform(self.dataset, stream_seed(self.seed, epoch, self.rank))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: Lightning's seeding, plus the transform reseeded per worker id."""
    pl_worker_init_function(worker_id)
    transform = getattr(get_worker_info().dataset, "transform", None)
    if hasattr(transform, "set_random_seed") and transform.seed is not None:
        transform.set_random_seed(stream_seed(transform.seed, worker_id))
