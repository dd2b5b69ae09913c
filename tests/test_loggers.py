"""Logger choices: TensorBoard writes events; W&B's documented WANDB_MODE decides offline or online."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from facerec.tasks import train
from tests.helpers import REPO
from tests.test_resume import compose_train


def wandb_offline(*overrides: str) -> bool:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return cfg.logger.wandb.offline


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
    train(compose_train(tmp_path, data_dir, "experiment=smoke", "trainer.max_epochs=1", "logger=tensorboard"))
    events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in tmp_path.rglob("*"))
    assert max(path.stat().st_size for path in events) > 100
