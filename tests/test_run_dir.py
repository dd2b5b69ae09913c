"""One run per run directory: a live run's directory is refused, a killed run's lock is taken over, records survive."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from facerec.run.checks import resolve_ckpt_path
from facerec.run.directory import LOCK_NAME, RUN_ID_NAME, RunDirInUseError, hold_run_dir, write_records
from facerec.run.hydra_callbacks import RunDirCheck
from facerec.run.training import train
from tests.helpers import compose_config, run_entry_point


def write_lock(run_dir, pid: int, host: str | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "slurm_job": None}))


def dead_pid() -> int:
    """A process ID no process has now (found without starting one)."""
    for pid in range(os.getpid() + 1000, 1, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
    raise AssertionError("no free process ID")


def prepare_live(tmp_path: Path) -> tuple[str, ...]:
    write_lock(tmp_path / "run", os.getpid())
    return ("experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}")


def prepare_finished(tmp_path: Path) -> tuple[str, ...]:
    records = tmp_path / "run" / ".hydra"
    records.mkdir(parents=True)
    (records / "config.yaml").write_text("first: run\n")
    (tmp_path / "run" / "metrics.json").write_text("{}")  # it finished
    return ("experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}")


def prepare_unwritable_log(tmp_path: Path) -> tuple[str, ...]:
    (tmp_path / "run" / "train.log").mkdir(parents=True)
    return ("experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path}")


REFUSALS = {"live": prepare_live, "finished": prepare_finished, "unwritable_log": prepare_unwritable_log}


@pytest.fixture(scope="module")
def refused_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The ``train.py`` runs of the refusal tests below (``REFUSALS``: each prepares its own directory, then its
    process starts), run at the same time: each is mostly its imports, which overlap on two cores."""
    directories = {name: tmp_path_factory.mktemp(name) for name in REFUSALS}
    commands = {name: prepare(directories[name]) for name, prepare in REFUSALS.items()}
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {
            name: pool.submit(run_entry_point, "train.py", *arguments, check=False)
            for name, arguments in commands.items()
        }
        return {name: (directories[name], future.result()) for name, future in futures.items()}


@pytest.mark.slow
def test_a_second_run_in_a_live_runs_directory_exits_non_zero_and_changes_nothing(refused_runs):
    tmp_path, result = refused_runs["live"]
    run = tmp_path / "run"
    assert result.returncode != 0
    assert f"run directory {run} is in use by another run (PID {os.getpid()}" in result.stderr, result.stderr[-3000:]
    assert sorted(path.name for path in run.iterdir() if path.name != "train.log") == [LOCK_NAME]


@pytest.mark.slow
def test_a_new_run_in_a_finished_runs_directory_is_refused_and_its_records_kept(refused_runs):
    tmp_path, result = refused_runs["finished"]
    records = tmp_path / "run" / ".hydra"
    assert result.returncode != 0
    assert "already holds another run (its .hydra/config.yaml): resume it with ckpt_path=last" in result.stderr
    assert (records / "config.yaml").read_text() == "first: run\n"
    assert sorted(path.name for path in records.iterdir()) == ["config.yaml"]
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_killed_runs_lock_is_taken_over_and_resumes_keep_every_record(tmp_path):
    write_lock(tmp_path, dead_pid())
    for n, resuming in enumerate((False, True, True)):
        (tmp_path / "checkpoints").mkdir(exist_ok=True)
        (tmp_path / "checkpoints" / "last.ckpt").touch()
        with hold_run_dir(tmp_path, resuming=resuming):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
            write_records(tmp_path, OmegaConf.create({"attempt": n}))
        assert not (tmp_path / LOCK_NAME).exists()
    assert OmegaConf.load(tmp_path / ".hydra" / "config.yaml").attempt == 0
    assert [OmegaConf.load(tmp_path / ".hydra" / f"resume_{n}" / "config.yaml").attempt for n in (1, 2)] == [1, 2]


def test_a_lock_from_another_host_is_respected(tmp_path):
    write_lock(tmp_path, dead_pid(), host="another-node")
    with (
        pytest.raises(RunDirInUseError, match=f"on another-node.*delete {tmp_path / LOCK_NAME}"),
        hold_run_dir(tmp_path, resuming=True),
    ):
        pass


def test_default_run_directories_are_named_to_the_microsecond():
    cfg = compose_config("paths.log_dir=/logs", return_hydra_config=True)
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]
    assert re.fullmatch(r"/logs/train/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}", run_dir), run_dir


@pytest.mark.slow
def test_a_run_dir_whose_log_cannot_be_written_is_named(refused_runs):
    """Hydra opens ``<run dir>/train.log`` before the task; a read-only run dir used to end in
    ``Unable to configure handler 'file'``. (A directory in the log's place fails alike, also as root.)"""
    tmp_path, result = refused_runs["unwritable_log"]
    assert result.returncode == 1
    assert f"cannot write the run log {tmp_path / 'run' / 'train.log'}" in result.stderr
    assert f"the run directory {tmp_path / 'run'} must be writable; choose another with hydra.run.dir=DIR" in (
        result.stderr
    )


def test_another_runs_checkpoint_is_not_resumed_into_a_finished_run_dir_and_refusals_write_no_record(
    tmp_path, data_dir
):
    """``hydra.run.dir=X ckpt_path=Y/checkpoints/last.ckpt`` used to overwrite X's checkpoints with Y's continuation,
    and a refused resume used to write ``.hydra/resume_<n>/``."""
    for name in ("x", "y"):
        train(compose_config("experiment=smoke", "trainer.max_epochs=1", output_dir=tmp_path / name, data_dir=data_dir))
    x_last, y_last = tmp_path / "x" / "checkpoints" / "last.ckpt", tmp_path / "y" / "checkpoints" / "last.ckpt"
    before = x_last.read_bytes()
    resume = ("experiment=smoke", "trainer.max_epochs=2", f"ckpt_path={y_last}")
    message = (
        f"checkpoint {y_last} belongs to another run than the one in {tmp_path / 'x'}: it was written in "
        f"{tmp_path / 'y'}.*Resume it in its own run directory \\(ckpt_path=last hydra.run.dir={tmp_path / 'y'}\\)"
        ", or continue it in a new one"
    )
    with pytest.raises(RunDirInUseError, match=message):
        train(compose_config(*resume, output_dir=tmp_path / "x", data_dir=data_dir))
    with pytest.raises(ValueError, match="model.head.margin"):  # a refused resume of its own run writes no record
        train(compose_config("experiment=smoke", "ckpt_path=last", "head.margin.margin=.1", output_dir=tmp_path / "x",
                             data_dir=data_dir))  # fmt: skip
    assert x_last.read_bytes() == before
    assert sorted(path.name for path in (tmp_path / "x" / ".hydra").iterdir()) == ["config.yaml", RUN_ID_NAME]
    train(compose_config(*resume, output_dir=tmp_path / "z", data_dir=data_dir))  # a new run dir: allowed
    train(compose_config("experiment=smoke", "trainer.max_epochs=3", "ckpt_path=last", output_dir=tmp_path / "z",
                         data_dir=data_dir))  # fmt: skip
    assert (tmp_path / "z" / ".hydra" / "resume_1" / "config.yaml").is_file()


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_in_its_directory(tmp_path):
    records = tmp_path / ".hydra"
    records.mkdir()
    (records / "config.yaml").write_text("first: run\n")
    with pytest.raises(FileNotFoundError, match="saved no checkpoint.*start it afresh in the same directory"):
        resolve_ckpt_path("last", tmp_path)
    with hold_run_dir(tmp_path, resuming=False):
        write_records(tmp_path, OmegaConf.create({"second": "run"}))
    assert (records / "unfinished_1" / "config.yaml").read_text() == "first: run\n"
    assert OmegaConf.load(records / "config.yaml").second == "run"
    (tmp_path / "metrics.json").write_text("{}")  # a finished run stays refused
    with pytest.raises(RunDirInUseError, match="already holds another run"), hold_run_dir(tmp_path, resuming=False):
        pass


def test_a_run_dir_whose_parent_cannot_be_created_is_named(tmp_path):
    """Hydra creates the run dir before the task: a file (or an unwritable folder) above it gave a traceback."""
    (tmp_path / "file").write_text("")
    run = tmp_path / "file" / "run"
    with pytest.raises(SystemExit, match=f"cannot create the run directory {run} .*choose another with hydra.run.dir"):
        RunDirCheck().on_run_start(OmegaConf.create({"hydra": {"run": {"dir": str(run)}}}))
    with pytest.raises(SystemExit, match=f"cannot create the sweep directory {run} .*hydra.sweep.dir=DIR"):
        RunDirCheck().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(run)}}}))
    callbacks = compose_config("paths.log_dir=/logs", return_hydra_config=True).hydra.callbacks
    assert any(entry._target_ == "facerec.run.hydra_callbacks.RunDirCheck" for entry in callbacks.values())
