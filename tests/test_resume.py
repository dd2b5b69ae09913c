"""Exact resume after SIGKILL, checkpoint on SIGTERM, and failing fast on a non-finite loss."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch
from lightning.pytorch.callbacks import Checkpoint, OnExceptionCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from facerec.callbacks import InterruptCheckpoint, NonFiniteLossError
from facerec.callbacks.nonfinite import first_nonfinite
from facerec.module import FaceRecognitionModule
from facerec.run.training import train
from tests.helpers import compose_config, start_process

DETERMINISTIC = ("experiment=smoke", "trainer.deterministic=true", "head=center", "trainer.max_epochs=2")


def start_train(output_dir: Path, data_dir: Path, *overrides: str) -> subprocess.Popen:
    """``python train.py`` in the background (its group is killed when the test ends); SIGINT stops it even
    where pytest runs with SIGINT ignored (``nohup ... &``)."""
    command = [sys.executable, "train.py", f"hydra.run.dir={output_dir}", f"paths.data_dir={data_dir}", *overrides]
    return start_process(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


class Interrupted(NamedTuple):
    run: Path  # its run directory
    returncode: int
    output: str  # standard output and error


# name -> (overrides, the checkpoint file whose appearance triggers the signal, the signal)
INTERRUPTS = {
    # last.ckpt is written after epoch_000.ckpt, so that one is complete
    "sigkill": (DETERMINISTIC, "last.ckpt", signal.SIGKILL),
    "sigterm": (("experiment=smoke", "trainer.max_epochs=1000"), "epoch_000.ckpt", signal.SIGTERM),
    "sigint": (("experiment=smoke", "trainer.max_epochs=1000"), "epoch_000.ckpt", signal.SIGINT),
}


@pytest.fixture(scope="module")
def interrupted(smoke_run, data_dir, tmp_path_factory) -> dict[str, Interrupted]:
    """The ``train.py`` runs of ``INTERRUPTS``, started together (each is mostly its imports, which overlap on two
    cores); each gets its signal once its checkpoint file appears. ``smoke_run`` wrote the synthetic data first."""
    root = tmp_path_factory.mktemp("interrupted")
    processes = {name: start_train(root / name, data_dir, *overrides) for name, (overrides, _, _) in INTERRUPTS.items()}
    waiting, deadline = set(INTERRUPTS), time.monotonic() + 180
    while waiting:
        for name in sorted(waiting):
            _, file, signum = INTERRUPTS[name]
            process = processes[name]
            if (root / name / "checkpoints" / file).is_file():
                process.send_signal(signum)
                waiting.remove(name)
            elif process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"{root / name / 'checkpoints' / file} never appeared\n{process.communicate()[0][-4000:]}")
        time.sleep(0.02)
    outputs = {name: process.communicate(timeout=120)[0] for name, process in processes.items()}
    return {name: Interrupted(root / name, processes[name].returncode, outputs[name]) for name in INTERRUPTS}


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(interrupted, data_dir, tmp_path):
    train(compose_config(*DETERMINISTIC, output_dir=tmp_path / "reference", data_dir=data_dir))
    checkpoints = interrupted["sigkill"].run / "checkpoints"
    train(
        compose_config(
            *DETERMINISTIC,
            f"ckpt_path={checkpoints / 'epoch_000.ckpt'}",
            output_dir=tmp_path / "resumed",
            data_dir=data_dir,
        )
    )
    reference = weights(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    resumed = weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert reference.keys() == resumed.keys()
    assert any("centers" in key for key in reference)
    for key, value in reference.items():
        assert torch.equal(value, resumed[key]), key


def check_saved_and_exited(run: Interrupted, signum: signal.Signals) -> None:
    """A long smoke run sent ``signum`` after epoch 0 (``interrupted``) saved and exited 128 + N."""
    assert "checkpoint saved to" in run.output, run.output[-4000:]
    assert run.returncode == 128 + signum, run.output[-4000:]


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_and_ckpt_path_last_resumes_it(interrupted, data_dir):
    check_saved_and_exited(interrupted["sigterm"], signal.SIGTERM)
    run = interrupted["sigterm"].run
    assert not (run / "metrics.json").exists()
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] > 0
    cfg = compose_config(
        "experiment=smoke",
        "ckpt_path=last",
        f"trainer.max_epochs={saved['epoch'] + 2}",
        output_dir=run,
        data_dir=data_dir,
    )
    train(cfg)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] > saved["global_step"]
    assert (run / ".hydra" / "overrides.yaml").read_text() != ""  # the interrupted run's records stay
    assert (run / ".hydra" / "resume_1" / "config.yaml").is_file()


@pytest.mark.slow
def test_ctrl_c_saves_last_checkpoint_and_exits_130(interrupted):
    check_saved_and_exited(interrupted["sigint"], signal.SIGINT)
    run = interrupted["sigint"].run
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] > 0


def test_interrupt_checkpoint_writes_last_ckpt_on_interrupts_only(tmp_path):
    callback = InterruptCheckpoint(str(tmp_path))
    saved: list[str] = []
    trainer = SimpleNamespace(global_step=3, save_checkpoint=saved.append)
    callback.on_exception(trainer, None, RuntimeError("a bug"))
    assert saved == []
    for interrupt in (KeyboardInterrupt(), SIGTERMException()):
        callback.on_exception(trainer, None, interrupt)
    assert [Path(path) for path in saved] == [tmp_path / "last.ckpt"] * 2
    assert isinstance(callback.on_interrupt, OnExceptionCheckpoint)
    # Not a Checkpoint itself: not in trainer.checkpoint_callbacks, and no teardown that deletes last.ckpt.
    assert not isinstance(callback, Checkpoint)


def test_ckpt_path_last_without_a_checkpoint_says_how_to_resume(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path=last hydra.run.dir=<run dir>"):
        train(compose_config("experiment=smoke", "ckpt_path=last", output_dir=tmp_path, data_dir=data_dir))


def test_nonfinite_loss_stops_naming_step_head_and_causes(data_dir, tmp_path):
    cfg = compose_config("experiment=smoke", "optimizer.lr=1e30", output_dir=tmp_path, data_dir=data_dir)
    with pytest.raises(
        NonFiniteLossError, match=r"at step \d+ .*head ArcFace margin on FullClassifier.*learning rate.*fp16.*margin"
    ):
        train(cfg)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_nonfinite_loss_skip_keeps_finite_weights(data_dir, tmp_path, caplog):
    cfg = compose_config(
        "experiment=smoke", "optimizer.lr=1e30", "callbacks.nonfinite.skip=true", output_dir=tmp_path, data_dir=data_dir
    )
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
    train(compose_config(*start, output_dir=run, data_dir=data_dir))
    net.unlink()
    train(compose_config(*start, "ckpt_path=last", "trainer.max_epochs=2", output_dir=run, data_dir=data_dir))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1


def test_resume_refuses_other_data_or_model_than_the_checkpoints_unless_forced(smoke_run, data_dir, tmp_path):
    last = f"ckpt_path={smoke_run / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(
        ValueError, match=r"model\.head\.margin\.margin: 0\.5 in the checkpoint, 0\.123 now.*force_resume=true"
    ):
        train(
            compose_config(
                "experiment=smoke", last, "head.margin.margin=0.123", output_dir=tmp_path / "head", data_dir=data_dir
            )
        )
    with pytest.raises(ValueError, match=r"data\.batch_size: \d+ in the checkpoint, 5 now"):
        train(
            compose_config(
                "experiment=smoke", last, "data.batch_size=5", output_dir=tmp_path / "data", data_dir=data_dir
            )
        )
    forced = compose_config(
        "experiment=smoke", last, "head.margin.margin=0.123", output_dir=tmp_path / "forced", data_dir=data_dir
    )
    forced.force_resume = True
    with pytest.raises(RuntimeError, match=r"training took no step .* raise trainer.max_epochs \(now 2\)"):
        train(forced)  # the checkpoint is at max_epochs already
    forced.trainer.max_epochs = 3
    train(forced)
    assert (tmp_path / "forced" / "checkpoints" / "last.ckpt").is_file()


def test_resume_keeps_the_metrics_and_warns_that_a_changed_lr_is_ignored(data_dir, tmp_path, caplog):
    run = tmp_path / "run"
    train(compose_config("experiment=smoke", "trainer.max_epochs=1", output_dir=run, data_dir=data_dir))
    before = (run / "metrics.json").read_text()
    train(compose_config("experiment=smoke", "ckpt_path=last", "optimizer.lr=0.5", output_dir=run, data_dir=data_dir))
    assert "model.optimizer.lr=0.5 differs from the checkpoint's" in caplog.text
    assert (run / ".hydra" / "resume_1" / "metrics_before.json").read_text() == before
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1
