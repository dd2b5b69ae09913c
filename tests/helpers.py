"""Helpers for tests that run the real entry points on tiny composed configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def run_script(
    script: str, *overrides: str, log_dir: Path, data_dir: Path, timeout: int = 300, env: dict | None = None
):
    """Runs ``python <script> <overrides>`` from the repo root with logs and data under tmp dirs.

    Returns:
        The completed process; fails the test with its output if it exited non-zero.
    """
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [sys.executable, script, f"paths.log_dir={log_dir}", f"paths.data_dir={data_dir}", *overrides]
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def compose_train(*overrides: str) -> DictConfig:
    """The ``train.py`` config composed with ``overrides`` (no Hydra app, nothing resolved)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def train_process(*overrides: str, script: str = "train.py", timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs ``python <script> <overrides>`` from the repo root and returns it, whatever its exit status."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, script, *overrides], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def write_identity_folder(root: Path, images: dict[str, int], size: int = 16) -> Path:
    """Writes ``root/<name>/<i>.jpg`` (``images[name]`` noise images per name, ``/`` in a name nests folders)."""
    rng = np.random.default_rng(0)
    for name, count in images.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"{i}.jpg"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


def run_dir(log_dir: Path, task: str = "train") -> Path:
    """The single run directory a task wrote under ``log_dir``."""
    runs = sorted((log_dir / task / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def read_metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def shared_file(relative: str) -> Path:
    """A file under ``../shared/data``; skips the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the real reference data lives in ../shared/data beside the repo")
    return path


def quiet_trainer(max_steps: int, **options) -> L.Trainer:
    """A CPU ``Trainer`` for a few in-process steps: no logger, checkpoints, progress bar, summary or validation."""
    quiet = {
        "accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "limit_val_batches": 0,
    }  # fmt: skip
    return L.Trainer(max_steps=max_steps, **(quiet | options))
