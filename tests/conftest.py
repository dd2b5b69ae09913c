"""Shared fixtures: the session's data and trained model, process cleanup, one thread for tiny tensors; and the
``gpu`` marker's skip on machines without CUDA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import facerec  # noqa: F401  (registers the OmegaConf resolvers conf/ uses, whatever test runs first)
from facerec.run.training import train
from tests.helpers import compose_config, kill_started

TESTS = Path(__file__).resolve().parent
SEEDED = {TESTS / "models"}  # folders whose tests start from torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips the tests marked ``gpu`` (with the reason) when CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker gpu): torch.cuda.is_available() is False on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _kill_started_processes() -> Iterator[None]:
    """After each test, pass, fail or timeout: kills the process group of every process it started through
    ``tests.helpers.start_process`` (``run_process``, ``run_entry_point``) and every ``spawn`` process."""
    try:
        yield
    finally:
        kill_started()


@pytest.fixture(autouse=True, scope="session")
def single_thread() -> Iterator[None]:
    """One intra-op thread for the whole session, and ``OMP_NUM_THREADS=1`` for the processes tests start.

    The tests' workloads are tiny and the CPUs shared: spinning OpenMP workers made an in-process smoke run
    5-10x slower on a busy 2-core machine (3 s with one thread, 14-36 s with two).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seeded(request: pytest.FixtureRequest) -> None:
    """Seeds torch with 0 before each test in a :data:`SEEDED` folder."""
    if request.path.parent in SEEDED:
        torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache shared by the whole session."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, data_dir) -> Path:
    """Run directory of one ``experiment=smoke`` training run (in this process), shared by every test that only
    needs a trained model; ``tests/test_entrypoints.py`` runs ``train.py`` itself."""
    run = tmp_path_factory.mktemp("smoke_logs") / "train" / "runs" / "smoke"
    train(compose_config("experiment=smoke", output_dir=run, data_dir=data_dir))
    return run


@pytest.fixture(scope="session")
def smoke_checkpoint(smoke_run) -> Path:
    """The shared smoke run's ``last.ckpt``."""
    return smoke_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def synthetic_heldout(data_dir, smoke_run) -> Path:
    """The held-out part of the session's ``synthetic_mini`` set (``images/``, ``pairs.txt``), which the smoke run
    generated and validated on."""
    return data_dir / "synthetic_mini" / "heldout"
