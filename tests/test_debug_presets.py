"""``debug=fast | overfit | profile | anomaly`` compose with any preset and run the real training task."""

from __future__ import annotations

import pytest
import torch

from facerec.run.training import train
from tests.helpers import compose_config


@pytest.mark.parametrize("debug", ["fast", "overfit", "profile", "anomaly"])
def test_debug_preset_runs(debug, data_dir, tmp_path):
    cfg = compose_config("experiment=smoke", f"debug={debug}", output_dir=tmp_path, data_dir=data_dir)
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu" and list(cfg.logger) == ["csv"]
    if debug == "overfit":
        cfg.trainer.max_epochs = 3  # the preset's 50 are for a real model; 3 show the mechanics
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    steps = {"fast": 2, "overfit": 3, "profile": 4, "anomaly": 4}  # smoke data: 4 batches per epoch
    assert checkpoint["global_step"] == steps[debug]
    assert (tmp_path / "metrics.json").is_file()


def test_debug_presets_compose_with_the_quickstart():
    for debug in ("fast", "overfit", "profile", "anomaly"):
        cfg = compose_config("experiment=quickstart", f"debug={debug}")
        assert cfg.trainer.max_epochs in (1, 50) and cfg.data.num_workers == 0
