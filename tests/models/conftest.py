"""Model-test fixtures."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    """Seeds torch and uses one intra-op thread: the shared CPU is oversubscribed, and spinning
    OpenMP workers make the tiny test workloads several times slower."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
