"""One run per run directory: a lock held while training, the run's identity and its config records.

Hydra's own ``.hydra/`` files are written before the task starts, so a second launch into a busy or
finished run directory would overwrite the first run's records. Training runs therefore set
``hydra.output_subdir: null``: :func:`hold_run_dir` takes the directory and refuses what does not belong
in it, and :func:`write_records` writes the records once the run is accepted: ``.hydra/{config,hydra,
overrides}.yaml`` and ``.hydra/run_id`` for a new run, ``.hydra/resume_<n>/`` for each resume (with
``metrics_before.json``, the run's metrics before that resume rewrites ``metrics.json``). The run id is
also stored in every checkpoint, so a checkpoint of another run is not resumed into this directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from facerec.callbacks.run_config import RUN_CONFIG_KEY, RUN_ID_KEY

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
RECORD_DIR = ".hydra"
RUN_ID_NAME = "run_id"
UNFINISHED_PREFIX = "unfinished_"


class RunDirInUseError(RuntimeError):
    """The run directory belongs to another run."""


def _holder() -> dict[str, str | int | None]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": os.environ.get("SLURM_JOB_ID")}


def _is_live(holder: dict) -> bool:
    """Whether the process that wrote a lock may still run (unknowable on another host: assumed yes)."""
    if holder.get("slurm_job") and holder.get("slurm_job") == os.environ.get("SLURM_JOB_ID"):
        return False  # this SLURM job, requeued: the previous attempt is gone
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_lock(lock: Path) -> None:
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder and _is_live(holder):
                raise RunDirInUseError(
                    f"run directory {lock.parent} is in use by another run (PID {holder.get('pid')} on "
                    f"{holder.get('host')}): two runs in one directory would mix their checkpoints and records. "
                    f"Wait for it, or choose another hydra.run.dir (if that run is gone, delete {lock})"
                ) from None
            lock.unlink(missing_ok=True)  # a run that was killed left it
            continue
        with os.fdopen(descriptor, "w") as file:
            json.dump(_holder(), file)
        return
    raise RunDirInUseError(f"could not take {lock}: another run keeps taking it")


def holds_run(output_dir: str | Path) -> bool:
    """Whether ``output_dir`` holds a run's records (``.hydra/config.yaml``)."""
    return (Path(output_dir) / RECORD_DIR / "config.yaml").is_file()


def saved_nothing(output_dir: str | Path) -> bool:
    """Whether ``output_dir`` holds no checkpoint (``*.ckpt`` at any depth) and no ``metrics.json``."""
    output_dir = Path(output_dir)
    return not (output_dir / "metrics.json").exists() and not any(output_dir.rglob("*.ckpt"))


def run_id(output_dir: str | Path) -> str | None:
    """The id of the run in ``output_dir`` (``.hydra/run_id``), None if it records none."""
    path = Path(output_dir) / RECORD_DIR / RUN_ID_NAME
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def checkpoint_run_dir(checkpoint: Mapping) -> str | None:
    """The run directory a training checkpoint was written in (its stored ``paths.output_dir``), if recorded."""
    paths = (checkpoint.get(RUN_CONFIG_KEY) or {}).get("paths") or {}
    return paths.get("output_dir")


def _same_run(output_dir: Path, checkpoint: Mapping, ckpt_path: Path) -> bool:
    """Whether ``checkpoint`` was written by the run in ``output_dir``: by run id when both record one (checkpoints
    and runs from before run ids do not), else if it lies in the directory or records it as its run directory."""
    ours, theirs = run_id(output_dir), checkpoint.get(RUN_ID_KEY)
    if ours and theirs:
        return ours == theirs
    if ckpt_path.resolve().is_relative_to(output_dir.resolve()):
        return True
    written_in = checkpoint_run_dir(checkpoint)
    return written_in is not None and Path(written_in).resolve() == output_dir.resolve()


def check_resumed_run(output_dir: str | Path, checkpoint: Mapping, ckpt_path: str | Path) -> None:
    """Refuses to resume a checkpoint of another run into a directory that holds a run.

    A checkpoint continues in its own run directory (``ckpt_path=last``) or in a new, empty one; resumed into
    another run's directory it would overwrite that run's checkpoints and metrics.

    Raises:
        RunDirInUseError: Naming both runs and the two ways to resume the checkpoint.
    """
    output_dir = Path(output_dir)
    if not holds_run(output_dir) or _same_run(output_dir, checkpoint, Path(ckpt_path)):
        return
    origin = checkpoint_run_dir(checkpoint)
    written_in = f"was written in {origin}" if origin else "does not record its run directory"
    own_dir = f"ckpt_path=last hydra.run.dir={origin}" if origin else "ckpt_path=last in its own run dir"
    raise RunDirInUseError(
        f"checkpoint {ckpt_path} belongs to another run than the one in {output_dir}: "
        f"it {written_in}, and resuming it here would overwrite that run's checkpoints and metrics. Resume it in "
        f"its own run directory ({own_dir}), or continue it in a new one (ckpt_path={ckpt_path} with a new or the "
        "default hydra.run.dir)"
    )


def _set_aside_unfinished(output_dir: Path) -> Path:
    """Moves the records of a run that saved nothing to ``.hydra/unfinished_<n>/``; returns that folder."""
    records = output_dir / RECORD_DIR
    target = records / f"{UNFINISHED_PREFIX}{len(list(records.glob(f'{UNFINISHED_PREFIX}*'))) + 1}"
    target.mkdir()
    for entry in list(records.iterdir()):
        if entry != target and not entry.name.startswith(UNFINISHED_PREFIX):
            shutil.move(entry, target / entry.name)
    return target


@rank_zero_only
def write_records(output_dir: str | Path, cfg: DictConfig) -> str | None:
    """Writes the run's config records (``.hydra/`` for a new run, ``.hydra/resume_<n>/`` for a resume).

    Call it once the run is accepted, so that a refused run leaves no record.

    Returns:
        The run id: the one ``.hydra/run_id`` holds, or a new one written there (a new run, or a run that
        predates run ids). Other processes than global zero write nothing and get None.
    """
    output_dir = Path(output_dir)
    records = output_dir / RECORD_DIR
    resumes = sorted(records.glob("resume_*"))
    target = records / f"resume_{len(resumes) + 1}" if holds_run(output_dir) else records
    target.mkdir(parents=True, exist_ok=True)
    metrics = Path(cfg.metrics_file) if cfg.get("metrics_file") else None
    if target != records and metrics is not None and metrics.is_file():
        shutil.copy2(metrics, target / "metrics_before.json")  # the resume rewrites metrics.json
    OmegaConf.save(cfg, target / "config.yaml")
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        OmegaConf.save(hydra.overrides.task, target / "overrides.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hydra}), target / "hydra.yaml")
    identity = run_id(output_dir)
    if identity is None:
        identity = uuid.uuid4().hex
        (records / RUN_ID_NAME).write_text(identity + "\n")
    return identity


@contextmanager
def hold_run_dir(
    output_dir: str | Path, resuming: bool, checkpoint: Mapping | None = None, ckpt_path: str | Path | None = None
) -> Iterator[None]:
    """Holds ``<output_dir>/.run.lock`` (PID, host) while a training run lives, and refuses a run that does not
    belong in the directory.

    Only the global-zero process takes the lock (DDP ranks share their run directory). A lock whose
    process is gone (killed run) is taken over. In the directory of a run that saved nothing (no
    checkpoint, no metrics: killed before its first checkpoint) a run starts afresh; the earlier run's
    records move to ``.hydra/unfinished_<n>/``.

    Args:
        output_dir: The run directory.
        resuming: Whether this run continues a checkpoint; a new run refuses a directory that holds another
            run's records and a checkpoint or metrics.
        checkpoint: The checkpoint resumed, if any: refused if it belongs to another run than the directory's.
        ckpt_path: Its path, for messages.

    Raises:
        RunDirInUseError: If a live run holds the directory, a new run would start in a used one, or the
            checkpoint belongs to another run.
    """
    output_dir = Path(output_dir)
    if rank_zero_only.rank != 0:
        yield
        return
    lock = output_dir / LOCK_NAME
    _take_lock(lock)
    try:
        resuming = resuming or any(output_dir.glob("hpc_ckpt_*.ckpt"))  # SLURM's requeued job resumes these
        if holds_run(output_dir) and saved_nothing(output_dir):
            kept = _set_aside_unfinished(output_dir)
            log.warning("%s held a run that saved nothing: starting afresh, its records moved to %s", output_dir, kept)
        elif not resuming and holds_run(output_dir):
            raise RunDirInUseError(
                f"run directory {output_dir} already holds another run (its {RECORD_DIR}/config.yaml): resume it "
                "with ckpt_path=last, or choose another hydra.run.dir"
            )
        if checkpoint is not None:
            check_resumed_run(output_dir, checkpoint, ckpt_path or "the checkpoint")
        yield
    finally:
        lock.unlink(missing_ok=True)
