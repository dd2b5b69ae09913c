"""Checks and settings a training run needs before it starts: resume path, output dir, devices, sweep group."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """Checkpoint to resume: None, a path, or ``"last"`` -> ``<output_dir>/checkpoints/last.ckpt``.

    Raises FileNotFoundError if missing; the message says how to resume, or to restart a run that saved none.
    """
    if not ckpt_path:
        return None
    path = Path(output_dir) / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if ckpt_path == "last" and not path.is_file() and (Path(output_dir) / ".hydra" / "config.yaml").is_file():
        raise FileNotFoundError(
            f"checkpoint to resume not found: {path}. The run in {output_dir} saved no checkpoint (killed before "
            f"its first?): start it afresh in the same directory without ckpt_path (python train.py "
            f"hydra.run.dir={output_dir} ...); its records are kept in .hydra/unfinished_<n>/"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint to resume not found: {path}. Resume a run in its own directory with "
            "`python train.py ckpt_path=last hydra.run.dir=<run dir>` (the run dir holds checkpoints/last.ckpt), "
            "or give a checkpoint file with ckpt_path=/path/to/file.ckpt"
        )
    return str(path)


def check_output_dir(output_dir: str | Path) -> None:
    """Raises PermissionError, naming the path, if ``output_dir`` cannot be created or written."""
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise PermissionError(
            f"output directory {output_dir} is not writable ({error.strerror or error}); "
            "choose another with paths.log_dir=DIR or hydra.run.dir=DIR"
        ) from error


def output_dirs(cfg: DictConfig) -> list[str]:
    """Local folders a training run writes: run dir, checkpoint and logger dirs, the metrics file's dir."""
    dirs = [str(cfg.paths.output_dir)]
    for group, key in (("callbacks", "dirpath"), ("logger", "save_dir")):
        dirs += [str(entry[key]) for entry in (cfg.get(group) or {}).values() if entry and entry.get(key)]
    if cfg.get("metrics_file"):
        dirs.append(str(Path(cfg.metrics_file).parent))
    return [path for path in dict.fromkeys(dirs) if "://" not in path]


def check_monitor(monitor: str | None, val_sets: Mapping[str, object]) -> None:
    """ValueError if ``monitor`` is ``val/<set>/<metric>`` for a ``<set>`` not in ``val_sets`` (lists them)."""
    parts = (monitor or "").split("/")
    if len(parts) == 3 and parts[0] == "val" and parts[1] not in val_sets:
        sets = ", ".join(val_sets) or "none"
        first = f"; e.g. monitor=val/{next(iter(val_sets))}/{parts[2]}" if val_sets else ", so set monitor=null"
        raise ValueError(
            f"monitor={monitor} names verification set {parts[1]!r}, which is not configured "
            f"(configured: {sets}){first}"
        )


def check_devices(trainer: DictConfig) -> None:
    """ValueError if GPUs are wanted (``accelerator`` gpu/cuda, or auto with GPUs) and ``trainer.devices`` exceeds
    ``torch.cuda.device_count()``.
    """
    accelerator, devices = str(trainer.get("accelerator", "auto")), trainer.get("devices", 1)
    available = torch.cuda.device_count()
    wants_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and available > 0)
    if isinstance(devices, str):
        return
    requested = devices if isinstance(devices, int) else len(devices)
    if wants_gpu and requested > available:
        raise ValueError(
            f"trainer.devices={requested} but only {available} CUDA GPU(s) are visible "
            "(check CUDA_VISIBLE_DEVICES); use trainer.devices=-1 for all of them, or trainer=cpu"
        )


def set_sweep_group(cfg: DictConfig) -> None:
    """In a Hydra multirun, sets the W&B ``group`` to the sweep folder's name unless set."""
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is None or wandb.get("group") or not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        with open_dict(wandb):
            wandb.group = Path(hydra.sweep.dir).name
