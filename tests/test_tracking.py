"""Loggers combine; W&B gets throughput and the best verification accuracy in its summary."""

from __future__ import annotations

import pytest
import wandb
from hydra.core.hydra_config import HydraConfig

from facerec.run.checks import set_sweep_group
from facerec.run.training import train
from tests.helpers import compose_config


@pytest.mark.slow  # wandb.init starts its service process (wandb-core)
def test_wandb_and_csv_together_both_write(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_API_KEY", "")
    cfg = compose_config(
        "experiment=smoke", "logger=[wandb,csv]", "trainer.log_every_n_steps=1", output_dir=tmp_path, data_dir=data_dir
    )
    assert set(cfg.logger) == {"wandb", "csv"}
    train(cfg)
    summary = dict(wandb.run.summary)
    wandb.finish()
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "train/images_per_second" in header and "val/synthetic/accuracy" in header
    assert len(list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))) == 1
    assert 0.0 <= summary["val/synthetic/best_accuracy"] <= 1.0
    assert summary["train/images_per_second"] > 0
    assert any(key.startswith("lr-SGD") for key in summary)


def test_sweep_jobs_share_a_wandb_group_named_after_the_sweep(tmp_path):
    cfg = compose_config(f"hydra.sweep.dir={tmp_path}/sweep_42", "hydra.mode=MULTIRUN", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        set_sweep_group(cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert cfg.logger.wandb.group == "sweep_42"
