"""Logger choices: TensorBoard writes events; W&B's documented WANDB_MODE decides offline or online."""

from __future__ import annotations

import pytest

from facerec.run.training import train
from tests.helpers import compose_config


def wandb_offline(*overrides: str) -> bool:
    return compose_config(*overrides).logger.wandb.offline


@pytest.mark.parametrize(
    ("mode", "offline"), [(None, True), ("offline", True), ("dryrun", True), ("online", False), ("disabled", False)]
)
def test_wandb_mode_env_decides_offline(monkeypatch, mode, offline):
    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)
    assert wandb_offline() is offline


def test_wandb_offline_override_beats_the_environment(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_offline("logger.wandb.offline=false") is False


def test_tensorboard_logger_writes_event_files(data_dir, tmp_path):
    train(
        compose_config(
            "experiment=smoke", "trainer.max_epochs=1", "logger=tensorboard", output_dir=tmp_path, data_dir=data_dir
        )
    )
    events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in tmp_path.rglob("*"))
    assert max(path.stat().st_size for path in events) > 100
