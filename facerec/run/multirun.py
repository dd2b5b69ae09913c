"""Lightning DDP inside a Hydra multirun job: DDP re-executes ``sys.argv`` + ``hydra.run.dir``, which would
rerun the whole sweep; :func:`ddp_runs_this_job` makes it re-run only this job. Jobs run one after another.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
"""Variables Lightning's subprocess launcher sets in the launching process."""


def in_multirun_job() -> bool:
    """True inside a job of ``python train.py -m ...`` (not in its re-executed DDP ranks)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def ddp_runs_this_job() -> Iterator[None]:
    """In a multirun job: ``sys.argv`` = this job's overrides, ``hydra.run.dir`` = its dir; afterwards restores them,
    destroys the process group and clears the launcher's variables. Elsewhere a no-op.
    """
    if not in_multirun_job():
        yield
        return
    hydra_cfg = HydraConfig.get()
    saved_argv, saved_run_dir = sys.argv[:], hydra_cfg.run.dir
    saved_env = {name: os.environ.get(name) for name in LAUNCHER_ENV}
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.run.dir = saved_run_dir
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
