"""Hydra sweeps: one run dir per job, a summary table, and DDP jobs inside a multirun."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from facerec.run.hydra_callbacks import markdown_table, summary_table
from facerec.run.tables import print_table
from tests.helpers import compose_config, run_entry_point


def optuna_installed() -> bool:
    return importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None


@pytest.fixture(scope="module")
def sweeps(smoke_run, data_dir, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The ``train.py -m`` sweeps of the two sweep tests below, started at the same time (their imports and jobs
    overlap on two cores); name -> (its log dir, its completed process). ``smoke_run`` wrote the data first."""
    commands = {
        "ddp": (
            "experiment=smoke", "trainer=ddp_sim", "trainer.max_epochs=1", "monitor=val/synthetic/accuracy",
            "head=arcface,cosface",
        ),
        "optuna": (
            "hparams_search=arcface_optuna", "experiment=smoke", "trainer.max_epochs=1", "hydra.sweeper.n_trials=2",
        ),
    }  # fmt: skip
    if not optuna_installed():
        del commands["optuna"]
    logs = {name: tmp_path_factory.mktemp(f"{name}_sweep") for name in commands}

    def paths(name: str) -> tuple[str, str]:
        return f"paths.log_dir={logs[name]}", f"paths.data_dir={data_dir}"

    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {
            name: pool.submit(run_entry_point, "train.py", "-m", *paths(name), *overrides, timeout=600)
            for name, overrides in commands.items()
        }
        return {name: (logs[name], future.result()) for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.timeout(700)
def test_multirun_of_two_ddp_jobs_writes_a_summary(sweeps):
    tmp_path, result = sweeps["ddp"]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    summary = json.loads((sweep / "multirun_summary.json").read_text())
    assert [job["overrides"].split()[-1] for job in summary["jobs"]] == ["head=arcface", "head=cosface"]
    for job in summary["jobs"]:
        assert 0.0 <= job["accuracy"]["synthetic"] <= job["best_accuracy"]["synthetic"] <= 1.0
        assert job["best_monitored"] == pytest.approx(job["best_accuracy"]["synthetic"])
        assert (sweep / str(job["job"]) / "checkpoints" / "last.ckpt").is_file()
    assert (
        "| job | overrides | synthetic accuracy | synthetic best accuracy |"
        in (sweep / "multirun_summary.md").read_text()
    )
    assert "Sweep summary" in result.stdout
    assert not (tmp_path / "train" / "runs").exists(), "DDP ranks must not start runs of their own"


def test_summary_table_marks_failed_jobs():
    rows = [
        {"job": 0, "overrides": "head=arcface", "accuracy": {"lfw": 0.5}, "best_accuracy": {"lfw": 0.6},
         "best_monitored": 0.75},
        {"job": 1, "overrides": "head=cosface", "accuracy": {}, "best_accuracy": {}, "best_monitored": None},
    ]  # fmt: skip
    table = markdown_table(rows, "val/lfw/accuracy").splitlines()
    assert table[0] == "| job | overrides | lfw accuracy | lfw best accuracy | best val/lfw/accuracy |"
    assert table[2:] == ["| 0 | head=arcface | 0.5000 | 0.6000 | 0.7500 |", "| 1 | head=cosface | – | – | – |"]


def split_cells(lines: list[str], bar: str) -> list[list[str]]:
    """The cells of the table rows among ``lines`` (those starting with ``bar``)."""
    return [[cell.strip() for cell in line.split(bar)[1:-1]] for line in lines if line.startswith(bar)]


def test_printed_summary_is_a_rich_table_with_the_markdown_columns(capsys):
    rows = [
        {"job": 0, "overrides": "experiment=smoke trainer.max_epochs=1 monitor=val/lfw/accuracy head=arcface",
         "accuracy": {"lfw": 0.5}, "best_accuracy": {"lfw": 0.6}, "best_monitored": 0.75},
        {"job": 1, "overrides": "head=cosface", "accuracy": {}, "best_accuracy": {}, "best_monitored": None},
    ]  # fmt: skip
    print_table(summary_table(rows, "val/lfw/accuracy", "Sweep summary (sweep dir)"))
    printed = capsys.readouterr().out.splitlines()
    assert "Sweep summary (sweep dir)" in printed[1]
    # Not a terminal: printed uncut at the table's own width, one line per row.
    (header,) = split_cells(printed, "┃")
    markdown = split_cells(markdown_table(rows, "val/lfw/accuracy").splitlines(), "|")
    assert header == markdown[0]
    cells = split_cells(printed, "│")
    assert cells == markdown[2:]


def test_optuna_search_preset_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_config("hparams_search=arcface_optuna", return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == "maximize"


@pytest.mark.slow
@pytest.mark.timeout(700)
def test_optuna_search_runs_trials_on_the_monitored_accuracy(request):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    tmp_path, _ = request.getfixturevalue("sweeps")["optuna"]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert 0.0 <= best["best_value"] <= 1.0
    assert set(best["best_params"]) == {"head.margin.margin", "head.margin.scale", "optimizer.lr"}
    assert len(json.loads((sweep / "multirun_summary.json").read_text())["jobs"]) == 2


def test_submitit_slurm_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    overrides = ["hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=8", "trainer=ddp"]
    cfg = compose_config(*overrides, return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert cfg.hydra.launcher.tasks_per_node == 8
