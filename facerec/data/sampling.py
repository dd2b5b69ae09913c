"""Training order and augmentation that depend only on (seed, epoch), so a resumed run repeats them."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import RandomSampler, get_worker_info


class EpochSeededSampler(RandomSampler):
    """A random permutation per epoch drawn from ``seed + epoch`` alone.

    Lightning calls :meth:`set_epoch` before every training epoch (also after resuming from a
    checkpoint), so an interrupted and resumed run sees the same batches as an uninterrupted one.
    The training transform (an albumentations ``Compose`` with its own random state) is reseeded
    with the same value. Under DDP Lightning replaces this sampler by a ``DistributedSampler``,
    which is epoch-seeded as well.

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
        transform = getattr(self.data_source, "transform", None)
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(self.seed + epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's worker seeding, plus a distinct augmentation stream per worker.

    Each worker's copy of the training transform is reseeded from its epoch seed and its id, so
    workers do not repeat each other's augmentations.
    """
    pl_worker_init_function(worker_id)
    transform = getattr(get_worker_info().dataset, "transform", None)
    if hasattr(transform, "set_random_seed") and transform.seed is not None:
        transform.set_random_seed(transform.seed * 1000 + worker_id)
