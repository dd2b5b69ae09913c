"""Shared fixtures, and the ``gpu`` marker's skip on machines without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import facerec  # noqa: F401  (registers the OmegaConf resolvers conf/ uses, whatever test runs first)
from tests.helpers import run_dir, run_script


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips the tests marked ``gpu`` (with the reason) when CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker gpu): torch.cuda.is_available() is False on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache shared by the whole session."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, data_dir) -> Path:
    """Run directory of one ``experiment=smoke`` training run, shared by the tests that read it."""
    log_dir = tmp_path_factory.mktemp("smoke_logs")
    run_script("train.py", "experiment=smoke", log_dir=log_dir, data_dir=data_dir)
    return run_dir(log_dir)
