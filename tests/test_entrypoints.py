"""The real entry points on tiny composed configs: as subprocesses, or their task functions in-process."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from facerec.run.training import train
from tests.helpers import compose_config, evaluate_in_process, read_metrics, run_dir, run_entry_point


def test_train_writes_checkpoint_metrics_and_classes(smoke_run):
    assert (smoke_run / "checkpoints" / "last.ckpt").is_file()
    metrics = read_metrics(smoke_run / "metrics.json")
    assert set(metrics) == {"synthetic"}
    assert 0.0 <= metrics["synthetic"]["accuracy"] <= 1.0
    assert json.loads((smoke_run / "classes.json").read_text()) == [f"id{i:05d}" for i in range(8)]
    checkpoint = torch.load(smoke_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["class_names"] == [f"id{i:05d}" for i in range(8)]


@pytest.fixture(scope="module")
def entry_point_runs(smoke_run, data_dir, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The ``eval.py`` run and the ``train.py logger=wandb`` run of the two tests below, started at the same time
    (each is mostly its imports, which overlap on two cores); name -> (its log dir, its completed process)."""
    eval_logs, wandb_logs = tmp_path_factory.mktemp("eval_logs"), tmp_path_factory.mktemp("wandb_logs")
    env = {"WANDB_API_KEY": "", "WANDB_MODE": "", "HOME": str(wandb_logs / "home")}
    with ThreadPoolExecutor(2) as pool:
        evaluation = pool.submit(
            run_entry_point, "eval.py", "data=synthetic_mini", f"ckpt_path={smoke_run / 'checkpoints' / 'last.ckpt'}",
            log_dir=eval_logs, data_dir=data_dir,
        )  # fmt: skip
        wandb = pool.submit(
            run_entry_point, "train.py", "experiment=smoke", "logger=wandb", "trainer.max_epochs=1",
            log_dir=wandb_logs, data_dir=data_dir, env=env, timeout=240,
        )  # fmt: skip
        return {"eval": (eval_logs, evaluation.result()), "wandb": (wandb_logs, wandb.result())}


@pytest.mark.slow
def test_eval_reproduces_the_training_callback_exactly_into_the_run_dir(smoke_run, entry_point_runs):
    tmp_path, result = entry_point_runs["eval"]
    assert "accuracy" in result.stdout
    assert read_metrics(run_dir(tmp_path, "eval") / "metrics.json") == read_metrics(smoke_run / "metrics.json")


@pytest.mark.parametrize("config", ["train", "eval"])
def test_quickstart_and_defaults_compose(config):
    overrides = ["experiment=quickstart"] if config == "train" else ["ckpt_path=x.ckpt"]
    cfg = compose_config(*overrides, config_name=config)
    assert cfg.data._target_ == "facerec.data.FaceDataModule"
    if config == "train":
        assert cfg.monitor == "val/synthetic/accuracy"
        assert cfg.model.backbone.name == "mobilenetv3_small_050"


def test_softmax_head_trains_end_to_end(data_dir, tmp_path):
    cfg = compose_config(
        "experiment=smoke", "head=softmax", "trainer.max_epochs=1", output_dir=tmp_path / "run", data_dir=data_dir
    )
    train(cfg)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_wandb_runs_offline_without_account_or_prompt(entry_point_runs):
    tmp_path, _ = entry_point_runs["wandb"]
    offline_runs = list((run_dir(tmp_path) / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].glob("*.wandb"))


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_two_process_ddp_matches_single_process_evaluation(data_dir, tmp_path):
    """With Partial FC: each rank writes its centres beside the checkpoint, which eval.py never reads."""
    run_entry_point(
        "train.py", "experiment=smoke", "trainer=ddp_sim", "trainer.max_epochs=1", "classifier=partial_fc",
        log_dir=tmp_path / "logs", data_dir=data_dir, timeout=400,
    )  # fmt: skip
    run = run_dir(tmp_path / "logs")
    assert len(list((run / "checkpoints").glob("last.ckpt.centres/*/rank*.pt"))) == 2
    evaluate_in_process(
        "data=synthetic_mini", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"metrics_file={tmp_path / 'single.json'}", output_dir=tmp_path / "eval", data_dir=data_dir,
    )  # fmt: skip
    distributed, single = read_metrics(run / "metrics.json"), read_metrics(tmp_path / "single.json")
    assert distributed.keys() == single.keys()
    for key, value in single["synthetic"].items():
        assert distributed["synthetic"][key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_eval_crops_verification_images_as_training_did(data_dir, tmp_path):
    run = tmp_path / "run"
    train(
        compose_config(
            "experiment=smoke", "data.crop=[4,4,24,24]", "trainer.max_epochs=1", output_dir=run, data_dir=data_dir
        )
    )
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["input_crop"] == [4, 4, 24, 24]
    evaluate_in_process(
        "data=synthetic_mini", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"metrics_file={tmp_path / 'eval.json'}", output_dir=tmp_path / "eval", data_dir=data_dir,
    )  # fmt: skip
    assert read_metrics(tmp_path / "eval.json") == read_metrics(run / "metrics.json")


def test_eval_at_another_input_size_than_the_checkpoints_says_so(smoke_run, data_dir, tmp_path, caplog):
    metrics_file = tmp_path / "eval.json"
    evaluate_in_process(
        "data=synthetic_mini", f"ckpt_path={smoke_run / 'checkpoints' / 'last.ckpt'}",
        "data.image_size=[24,24]", f"metrics_file={metrics_file}", output_dir=tmp_path / "run", data_dir=data_dir,
    )  # fmt: skip
    assert "evaluating with data.image_size=[24, 24]; " in caplog.text
    assert "was trained with [32, 32]" in caplog.text
    assert read_metrics(metrics_file) != read_metrics(smoke_run / "metrics.json")
