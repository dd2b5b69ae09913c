"""Head tests use tiny tensors: one intra-op thread avoids thread contention on shared CPUs."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Runs each head test with ``torch.set_num_threads(1)``, restoring the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
