"""Training order and augmentation that depend only on (seed, epoch[, rank]), so a resumed run repeats them."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DistributedSampler, RandomSampler, get_worker_info


def stream_seed(*keys: int) -> int:
    """A 32-bit seed derived from ``keys`` (e.g. seed, epoch, rank); distinct keys give unrelated streams."""
    return int(np.random.SeedSequence([int(key) for key in keys]).generate_state(1)[0])


def reseed_transform(dataset: object, seed: int) -> None:
    """Reseeds the dataset's albumentations ``transform``, if it has one."""
    transform = getattr(dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


class EpochSeededSampler(RandomSampler):
    """A random permutation per epoch drawn from ``seed + epoch`` alone.

    Lightning calls :meth:`set_epoch` before every training epoch (also after resuming from a
    checkpoint), so an interrupted and resumed run sees the same batches as an uninterrupted one.
    The training transform (an albumentations ``Compose`` with its own random state) is reseeded
    from ``(seed, epoch)`` as well. Under DDP the datamodule uses
    :class:`EpochSeededDistributedSampler` instead.

    Args:
        data_source: The training dataset; its ``transform`` (if any) is reseeded every epoch.
        seed: Base seed (the run's ``seed``).
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
    """PyTorch's shuffling ``DistributedSampler`` that also reseeds this rank's augmentation every epoch.

    The order is the ``DistributedSampler``'s (a permutation from ``seed + epoch``, padded to a
    multiple of the world size, rank r taking every W-th index), the same Lightning would use; the
    training transform is reseeded from ``(seed, epoch, rank)``, so a resumed DDP run repeats both
    and no two ranks draw the same augmentations. Lightning keeps a ``DistributedSampler`` it is given.

    Args:
        dataset: The training dataset; its ``transform`` (if any) is reseeded every epoch.
        num_replicas: World size W.
        rank: This process' global rank.
        seed: Base seed (the run's ``seed``).
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation and this rank's augmentation stream of ``epoch``."""
        super().set_epoch(epoch)
        reseed_transform(self.dataset, stream_seed(self.seed, epoch, self.rank))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's worker seeding, plus a distinct augmentation stream per worker.

    Each worker's copy of the training transform is reseeded from its epoch seed and its id, so
    workers do not repeat each other's augmentations.
    """
    pl_worker_init_function(worker_id)
    transform = getattr(get_worker_info().dataset, "transform", None)
    if hasattr(transform, "set_random_seed") and transform.seed is not None:
        transform.set_random_seed(stream_seed(transform.seed, worker_id))
