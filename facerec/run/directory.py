"""One run per run directory: a lock while training, a run id (``.hydra/run_id``, also in checkpoints) and config
records written only once the run is accepted (training sets ``hydra.output_subdir: null``).
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
    """Whether a lock's writer may still run (another host: assumed yes; this requeued SLURM job: no)."""
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
    """Whether ``output_dir`` holds run records (``.hydra/config.yaml``)."""
    return (Path(output_dir) / RECORD_DIR / "config.yaml").is_file()


def saved_nothing(output_dir: str | Path) -> bool:
    """Whether ``output_dir`` has no ``*.ckpt`` (any depth) and no ``metrics.json``."""
    output_dir = Path(output_dir)
    return not (output_dir / "metrics.json").exists() and not any(output_dir.rglob("*.ckpt"))


def run_id(output_dir: str | Path) -> str | None:
    """Run id in ``output_dir/.hydra/run_id``, or None."""
    path = Path(output_dir) / RECORD_DIR / RUN_ID_NAME
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def checkpoint_run_dir(checkpoint: Mapping) -> str | None:
    """A checkpoint's recorded ``paths.output_dir``, or None."""
    paths = (checkpoint.get(RUN_CONFIG_KEY) or {}).get("paths") or {}
    return paths.get("output_dir")


def _same_run(output_dir: Path, checkpoint: Mapping, ckpt_path: Path) -> bool:
    """Whether ``checkpoint`` is from the run in ``output_dir``: by run id if both have one, else if it lies in or
    records that directory.
    """
    ours, theirs = run_id(output_dir), checkpoint.get(RUN_ID_KEY)
    if ours and theirs:
        return ours == theirs
    if ckpt_path.resolve().is_relative_to(output_dir.resolve()):
        return True
    written_in = checkpoint_run_dir(checkpoint)
    return written_in is not None and Path(written_in).resolve() == output_dir.resolve()


def check_resumed_run(output_dir: str | Path, checkpoint: Mapping, ckpt_path: str | Path) -> None:
    """Refuses to resume another run's checkpoint into a directory holding a run (it would overwrite its files).

    Raises RunDirInUseError naming both runs and how to resume the checkpoint instead.
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
    """Moves the records of a run that saved nothing to ``.hydra/unfinished_<n>/``; returns it."""
    records = output_dir / RECORD_DIR
    target = records / f"{UNFINISHED_PREFIX}{len(list(records.glob(f'{UNFINISHED_PREFIX}*'))) + 1}"
    target.mkdir()
    for entry in list(records.iterdir()):
        if entry != target and not entry.name.startswith(UNFINISHED_PREFIX):
            shutil.move(entry, target / entry.name)
    return target


@rank_zero_only
def write_records(output_dir: str | Path, cfg: DictConfig) -> str | None:
    """Writes config records: ``.hydra/{config,hydra,overrides}.yaml`` for a new run, ``.hydra/resume_<n>/`` (plus
    ``metrics_before.json``) for a resume. Call once the run is accepted.

    Returns:
        The run id from ``.hydra/run_id`` (written if absent); None on ranks other than global zero.
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
    """Holds ``<output_dir>/.run.lock`` (PID, host) on global rank zero while the run lives; refuses foreign runs.

    A dead holder's lock is taken over. The records of a run that saved nothing move to
    ``.hydra/unfinished_<n>/`` and the run starts afresh. A new run (not ``resuming``, no SLURM ``hpc_ckpt_*``)
    refuses a directory holding a run; a resumed ``checkpoint`` must be this directory's run.

    Raises:
        RunDirInUseError: Live holder, used directory, or another run's checkpoint.
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
