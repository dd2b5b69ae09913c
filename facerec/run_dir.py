"""One run per run directory: a lock held while training, and the run's config records.

Hydra's own ``.hydra/`` files are written before the task starts, so a second launch into a busy or
finished run directory would overwrite the first run's records. Training runs therefore set
``hydra.output_subdir: null`` and :func:`hold_run_dir` writes the records itself, after it has taken the
directory: ``.hydra/{config,hydra,overrides}.yaml`` for a new run, ``.hydra/resume_<n>/`` for each resume
(with ``metrics_before.json``, the run's metrics before that resume rewrites ``metrics.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

LOCK_NAME = ".run.lock"
RECORD_DIR = ".hydra"


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


def _write_records(output_dir: Path, cfg: DictConfig) -> None:
    records = output_dir / RECORD_DIR
    resumes = sorted(records.glob("resume_*"))
    target = records / f"resume_{len(resumes) + 1}" if (records / "config.yaml").exists() else records
    target.mkdir(parents=True, exist_ok=True)
    metrics = Path(cfg.metrics_file) if cfg.get("metrics_file") else None
    if target != records and metrics is not None and metrics.is_file():
        shutil.copy2(metrics, target / "metrics_before.json")  # the resume rewrites metrics.json
    OmegaConf.save(cfg, target / "config.yaml")
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        OmegaConf.save(hydra.overrides.task, target / "overrides.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hydra}), target / "hydra.yaml")


@contextmanager
def hold_run_dir(output_dir: str | Path, cfg: DictConfig, resuming: bool) -> Iterator[None]:
    """Holds ``<output_dir>/.run.lock`` (PID, host) while a training run lives, and writes its config records.

    Only the global-zero process takes the lock (DDP ranks share their run directory). A lock whose
    process is gone (killed run) is taken over.

    Args:
        output_dir: The run directory.
        cfg: The run's config (saved to ``.hydra/config.yaml``, or ``.hydra/resume_<n>/`` when resuming).
        resuming: Whether this run continues the run in ``output_dir``; a new run refuses a directory
            that already holds another run's records.

    Raises:
        RunDirInUseError: If a live run holds the directory, or a new run would start in a used one.
    """
    output_dir = Path(output_dir)
    if rank_zero_only.rank != 0:
        yield
        return
    lock = output_dir / LOCK_NAME
    _take_lock(lock)
    try:
        resuming = resuming or any(output_dir.glob("hpc_ckpt_*.ckpt"))  # SLURM's requeued job resumes these
        if not resuming and (output_dir / RECORD_DIR / "config.yaml").exists():
            raise RunDirInUseError(
                f"run directory {output_dir} already holds another run (its {RECORD_DIR}/config.yaml): resume it "
                "with ckpt_path=last, or choose another hydra.run.dir"
            )
        _write_records(output_dir, cfg)
        yield
    finally:
        lock.unlink(missing_ok=True)
