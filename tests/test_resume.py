"""Exact resume after SIGKILL, checkpoint on SIGTERM, and failing fast on a non-finite loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from facerec.callbacks import NonFiniteLossError
from facerec.callbacks.nonfinite import first_nonfinite
from facerec.module import FaceRecognitionModule
from facerec.tasks import train
from tests.helpers import REPO

DETERMINISTIC = ("experiment=smoke", "trainer.deterministic=true", "head=center", "trainer.max_epochs=2")


def compose_train(output_dir: Path, data_dir: Path, *overrides: str):
    """The train config with the run written to ``output_dir`` (no Hydra app needed)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[f"paths.root_dir={REPO}", f"paths.output_dir={output_dir}", f"paths.data_dir={data_dir}",
                       *overrides],
        )  # fmt: skip


def start_train(output_dir: Path, data_dir: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "train.py", f"hydra.run.dir={output_dir}", f"paths.data_dir={data_dir}", *overrides]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} never appeared\n{process.communicate()[0][-4000:]}")
        time.sleep(0.02)


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def test_resume_after_sigkill_equals_an_uninterrupted_run(data_dir, tmp_path):
    train(compose_train(tmp_path / "reference", data_dir, *DETERMINISTIC))
    killed = start_train(tmp_path / "killed", data_dir, *DETERMINISTIC)
    checkpoints = tmp_path / "killed" / "checkpoints"
    wait_for(checkpoints / "last.ckpt", killed)  # written after epoch_000.ckpt, so that one is complete
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    train(compose_train(tmp_path / "resumed", data_dir, *DETERMINISTIC, f"ckpt_path={checkpoints / 'epoch_000.ckpt'}"))
    reference = weights(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    resumed = weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert reference.keys() == resumed.keys()
    assert any("centers" in key for key in reference)
    for key, value in reference.items():
        assert torch.equal(value, resumed[key]), key


def test_sigterm_saves_last_checkpoint_and_ckpt_path_last_resumes_it(data_dir, tmp_path):
    run = tmp_path / "run"
    process = start_train(run, data_dir, "experiment=smoke", "trainer.max_epochs=1000")
    wait_for(run / "checkpoints" / "epoch_000.ckpt", process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert "checkpoint saved to" in output, output[-4000:]
    assert process.returncode == 128 + signal.SIGTERM, output[-4000:]
    assert not (run / "metrics.json").exists()
    interrupted = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert interrupted["global_step"] > 0
    cfg = compose_train(
        run, data_dir, "experiment=smoke", "ckpt_path=last", f"trainer.max_epochs={interrupted['epoch'] + 2}"
    )
    train(cfg)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] > interrupted["global_step"]
    assert (run / ".hydra" / "overrides.yaml").read_text() != ""  # the interrupted run's records stay
    assert (run / ".hydra" / "resume_1" / "config.yaml").is_file()


def test_ctrl_c_saves_last_checkpoint_and_exits_130(data_dir, tmp_path):
    run = tmp_path / "run"
    process = start_train(run, data_dir, "experiment=smoke", "trainer.max_epochs=1000")
    wait_for(run / "checkpoints" / "epoch_000.ckpt", process)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert "checkpoint saved to" in output, output[-4000:]
    assert process.returncode == 128 + signal.SIGINT, output[-4000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] > 0


def test_ckpt_path_last_without_a_checkpoint_says_how_to_resume(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path=last hydra.run.dir=<run dir>"):
        train(compose_train(tmp_path, data_dir, "experiment=smoke", "ckpt_path=last"))


def test_nonfinite_loss_stops_naming_step_head_and_causes(data_dir, tmp_path):
    cfg = compose_train(tmp_path, data_dir, "experiment=smoke", "optimizer.lr=1e30")
    with pytest.raises(NonFiniteLossError, match=r"at step \d+ .*head ArcFaceHead.*learning rate.*fp16.*margin"):
        train(cfg)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_nonfinite_loss_skip_keeps_finite_weights(data_dir, tmp_path, caplog):
    cfg = compose_train(tmp_path, data_dir, "experiment=smoke", "optimizer.lr=1e30", "callbacks.nonfinite.skip=true")
    train(cfg)
    assert "skipped batch at step" in caplog.text
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    parameters = [v for k, v in checkpoint["state_dict"].items() if "running" not in k and v.is_floating_point()]
    assert all(torch.isfinite(p).all() for p in parameters)


def test_the_first_nonfinite_loss_of_a_step_is_kept():
    losses = [torch.tensor(v) for v in (1.0, float("nan"), 2.0, float("inf"))]
    kept = None
    for loss in losses:
        kept = first_nonfinite(kept, loss)
    assert kept.isnan()
    assert first_nonfinite(first_nonfinite(None, losses[0]), losses[2]) == 2.0


def test_resume_does_not_reread_the_initial_backbone_weights(smoke_run, data_dir, tmp_path):
    """A run started from ``backbone.checkpoint_path`` resumes after that file is gone."""
    net = tmp_path / "net.pth"
    torch.save(
        FaceRecognitionModule.load_from_checkpoint(smoke_run / "checkpoints" / "last.ckpt").net.state_dict(), net
    )
    run = tmp_path / "run"
    start = ("experiment=smoke", "trainer.max_epochs=1", f"backbone.checkpoint_path={net}")
    train(compose_train(run, data_dir, *start))
    net.unlink()
    train(compose_train(run, data_dir, *start, "ckpt_path=last", "trainer.max_epochs=2"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1


def test_resume_refuses_other_data_or_model_than_the_checkpoints_unless_forced(smoke_run, data_dir, tmp_path):
    last = f"ckpt_path={smoke_run / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(ValueError, match=r"model\.head\.margin: 0\.5 in the checkpoint, 0\.123 now.*force_resume=true"):
        train(compose_train(tmp_path / "head", data_dir, "experiment=smoke", last, "head.margin=0.123"))
    with pytest.raises(ValueError, match=r"data\.batch_size: \d+ in the checkpoint, 5 now"):
        train(compose_train(tmp_path / "data", data_dir, "experiment=smoke", last, "data.batch_size=5"))
    forced = compose_train(tmp_path / "forced", data_dir, "experiment=smoke", last, "head.margin=0.123")
    forced.force_resume = True
    with pytest.raises(RuntimeError, match=r"training took no step .* raise trainer.max_epochs \(now 2\)"):
        train(forced)  # the checkpoint is at max_epochs already
    forced.trainer.max_epochs = 3
    train(forced)
    assert (tmp_path / "forced" / "checkpoints" / "last.ckpt").is_file()


def test_resume_keeps_the_metrics_and_warns_that_a_changed_lr_is_ignored(data_dir, tmp_path, caplog):
    run = tmp_path / "run"
    train(compose_train(run, data_dir, "experiment=smoke", "trainer.max_epochs=1"))
    before = (run / "metrics.json").read_text()
    train(compose_train(run, data_dir, "experiment=smoke", "ckpt_path=last", "optimizer.lr=0.5"))
    assert "model.optimizer.lr=0.5 differs from the checkpoint's" in caplog.text
    assert (run / ".hydra" / "resume_1" / "metrics_before.json").read_text() == before
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1
