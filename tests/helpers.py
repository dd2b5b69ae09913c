"""Helpers for tests that run the real entry points on tiny composed configs."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facerec.data.decode import encode_jpeg
from facerec.module import FaceRecognitionModule

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Every process a test starts (start_process, spawn), killed with its process group after each test by
# tests/conftest.py's autouse fixture, pass, fail or timeout, and at exit.
_STARTED: list[subprocess.Popen | mp.Process] = []


def _child_default_sigint() -> None:
    """In the child before exec: SIGINT's default disposition, which Python replaces with KeyboardInterrupt.

    A shell starts background jobs (``nohup ... &``) with SIGINT ignored, and an ignored signal stays ignored
    across exec, so a child would not stop on SIGINT; Python installs its handler only where it is not ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_process(command: Sequence[str], *, env: dict | None = None, **options) -> subprocess.Popen:
    """Starts ``command`` from the repo root in a session (process group) of its own: the one way tests start one.

    ``env`` is added to this process' environment (plus ``NO_ALBUMENTATIONS_UPDATE=1``, ``PYTHONUNBUFFERED=1``);
    stdin is ``/dev/null``; ``options`` go to :class:`subprocess.Popen`. The process and everything it started
    is killed when the test ends (:func:`kill_started`).
    """
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    options = {"cwd": REPO, "stdin": subprocess.DEVNULL, **options}
    process = subprocess.Popen(
        list(command), env=env, start_new_session=True, preexec_fn=_child_default_sigint, **options
    )
    _STARTED.append(process)
    return process


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILLs ``process``' process group (what is left of it) and reaps ``process``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_started() -> None:
    """Kills every process :func:`start_process` or :func:`spawn` started, with what they started in turn."""
    while _STARTED:
        process = _STARTED.pop()
        if isinstance(process, subprocess.Popen):
            kill_group(process)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        elif process.is_alive():
            process.kill()
            process.join()


atexit.register(kill_started)


def run_process(
    command: Sequence[str], *, timeout: float = 300, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Runs ``command`` (:func:`start_process`) to its end, capturing text output; kills its group after.

    Args:
        timeout: Seconds before the test fails with the output so far (the group is killed).
        check: Fail the test with the output if the command exits non-zero; otherwise return it whatever its status.
    """
    process = start_process(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(map(str, command))} ran past {timeout} s\n{stdout[-4000:]}\n{stderr[-6000:]}")
    finally:
        kill_group(process)  # what it left behind
    if check and process.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {process.returncode}\n{stdout[-4000:]}\n{stderr[-6000:]}")
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


def run_entry_point(
    script: str,
    *args: str,
    log_dir: Path | None = None,
    data_dir: Path | None = None,
    check: bool = True,
    timeout: float = 300,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Runs ``python <script> <args>`` (``train.py``, ``eval.py``; ``-m <module>``) from the repo root.

    Args:
        log_dir: Sets ``paths.log_dir`` (runs go to ``<log_dir>/<task>/runs/<time>``, :func:`run_dir`).
        data_dir: Sets ``paths.data_dir``.
        check: Fail the test with its output if it exits non-zero (otherwise the caller checks the status).
    """
    paths = [f"paths.log_dir={log_dir}"] if log_dir is not None else []
    paths += [f"paths.data_dir={data_dir}"] if data_dir is not None else []
    return run_process([sys.executable, script, *args, *paths], timeout=timeout, env=env, check=check)


def spawn(function: Callable, *args, nprocs: int = 2) -> None:
    """``torch.multiprocessing.spawn(function, args, nprocs)``: each process gets its rank first; the processes
    are killed when the test ends, even if it failed or timed out while they ran."""
    context = mp.start_processes(function, args=args, nprocs=nprocs, join=False, start_method="spawn")
    _STARTED.extend(context.processes)
    while not context.join():
        pass


def head_parts(name: str) -> tuple[str, list[str]]:
    """``conf/head/<name>.yaml``'s margin and loss terms (``conf/margin``, ``conf/loss_term`` names)."""
    defaults = OmegaConf.load(REPO / "conf" / "head" / f"{name}.yaml").get("defaults", [])
    choices = {key: value for entry in defaults if not isinstance(entry, str) for key, value in entry.items()}
    terms = [value for key, value in choices.items() if key.startswith("/loss_term@")]
    return choices["/margin@margin"], terms


def registered_heads(*, margin: bool | None = None, center_loss: bool | None = None) -> list[str]:
    """The heads of ``conf/head/`` (sorted), filtered: ``margin`` (a cosine margin, not ``softmax``'s linear
    logits), ``center_loss`` (it adds the center term); ``None`` takes either."""

    def keep(name: str) -> bool:
        margin_name, terms = head_parts(name)
        return (margin is None or (margin_name != "softmax") == margin) and (
            center_loss is None or ("center" in terms) == center_loss
        )

    return [name for name in sorted(p.stem for p in (REPO / "conf" / "head").glob("*.yaml")) if keep(name)]


def compose_config(
    *overrides: str,
    config_name: str = "train",
    output_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
    return_hydra_config: bool = False,
    config_dir: Path | None = None,
) -> DictConfig:
    """``conf/<config_name>.yaml`` composed with ``overrides``, without a Hydra app; nothing is resolved.

    Args:
        overrides: Hydra command-line overrides, e.g. ``"experiment=smoke"``.
        config_name: The primary config: ``"train"`` or ``"eval"``.
        output_dir: Sets ``paths.output_dir`` and ``paths.root_dir`` (the repo), which the Hydra app sets
            otherwise, so that ``facerec.run.training.train`` / ``evaluate`` can run the config in-process.
        data_dir: Sets ``paths.data_dir`` (e.g. the session's synthetic-data cache, the ``data_dir`` fixture).
        return_hydra_config: Also compose the ``hydra`` node (run and sweep directories, launcher, sweeper).
        config_dir: Another primary-config folder than ``conf/`` (one that searches ``conf/``, say).
    """
    paths = [f"paths.root_dir={REPO}", f"paths.output_dir={output_dir}"] if output_dir is not None else []
    paths += [f"paths.data_dir={data_dir}"] if data_dir is not None else []
    with initialize_config_dir(config_dir=str(config_dir or REPO / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=[*paths, *overrides], return_hydra_config=return_hydra_config)


def eval_set_entry(kind: str, **options) -> DictConfig:
    """``conf/eval_set/<kind>.yaml`` with ``options`` set: an ``eval_sets`` entry as ``+eval_set@eval_sets.NAME=kind``
    composes it."""
    return OmegaConf.merge(OmegaConf.load(REPO / "conf" / "eval_set" / f"{kind}.yaml"), options)


def module_embeddings(checkpoint: Path, images: list[np.ndarray]) -> np.ndarray:
    """The LightningModule's own ``embed`` (image + mirror image) on RGB uint8 images already at its input size.

    An independent path to check the inference and evaluation code against. Returns (N, E) raw float64 embeddings.
    """
    module = FaceRecognitionModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    batch = torch.stack([torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1 for image in images])
    with torch.inference_mode():
        return module.embed(batch).double().numpy()


def evaluate_in_process(*overrides: str, output_dir: Path, data_dir: Path) -> dict[str, dict[str, float]]:
    """What ``python eval.py <overrides>`` does, in this process (no 15 s of imports); run dir ``output_dir``."""
    from facerec.run.evaluation import evaluate

    return evaluate(compose_config(*overrides, config_name="eval", output_dir=output_dir, data_dir=data_dir))


def smoke_model(*overrides: str, num_classes: int = 4) -> FaceRecognitionModule:
    """The ``experiment=smoke`` model (tiny timm net, 16-d embeddings, 32×32 images) for ``num_classes`` identities."""
    cfg = compose_config("experiment=smoke", *overrides)
    names = [f"id{i}" for i in range(num_classes)]
    return instantiate(cfg.model, num_classes=num_classes, class_names=names, _recursive_=False)


def write_identity_folder(root: Path, images: dict[str, int], size: int = 16) -> Path:
    """Writes ``root/<name>/<i>.jpg`` (``images[name]`` noise images per name, ``/`` in a name nests folders)."""
    rng = np.random.default_rng(0)
    for name, count in images.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"{i}.jpg"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


def write_image(path: Path, value: int = 128, size: int | tuple[int, int] = 8) -> Path:
    """Writes a uniform JPEG of pixel ``value`` to ``path``, making its folders; ``size``: a side or (height, width)."""
    height, width = (size, size) if isinstance(size, int) else size
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(np.full((height, width, 3), value, np.uint8)))
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a process group's ``MASTER_PORT``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_as_torchrun_rank(rank: int, port: int, world_size: int = 2) -> None:
    """Sets the environment torchrun gives rank ``rank``, so Lightning's DDP joins this process instead of launching."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
        LOCAL_RANK=str(rank), NODE_RANK="0",
    )  # fmt: skip


def run_dir(log_dir: Path, task: str = "train") -> Path:
    """The single run directory a task wrote under ``log_dir``."""
    runs = sorted((log_dir / task / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def read_metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def shared_file(relative: str) -> Path:
    """A file under ``../shared/data``; skips the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the real reference data lives in ../shared/data beside the repo")
    return path


def quiet_trainer(max_steps: int, **options) -> L.Trainer:
    """A CPU ``Trainer`` for a few in-process steps: no logger, checkpoints, progress bar, summary or validation."""
    quiet = {
        "accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "limit_val_batches": 0,
    }  # fmt: skip
    return L.Trainer(max_steps=max_steps, **(quiet | options))


@contextmanager
def without_tf32() -> Iterator[None]:
    """Full float32 CUDA convolutions and matmuls inside (TF32 off, as on the CPU), so float32 results compare
    tightly; the previous settings are restored after."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
