"""Images/s of a full facerec training step (Lightning) against a bare PyTorch loop, in one run.

Both train the ``experiment=quickstart`` model (MobileNetV3-small-0.5 + ArcFace, built from
``conf/train.yaml`` as ``facerec.run.training.train`` does) with the configured optimizer, on the same
random in-memory batches:

* Lightning: ``lightning.Trainer`` from ``conf/trainer`` with the callbacks and loggers of
  ``conf/callbacks`` and ``conf/logger`` (``--logger``, default W&B offline as in ``conf/train.yaml``),
  instantiated as ``facerec.run.training.train`` does: the non-finite guard, images/s, LR monitor, RNG state,
  interrupt and epoch checkpoints, verification (idle: no validation runs); the LR schedule stepped
  each iteration, ``train/loss`` and ``train/acc`` logged each step. The progress bar is off, and
  callbacks that need the datamodule's image folders at the end of fit (the feature plot) are left out;
* bare: ``loss = head(net(x), y); loss.backward(); optimizer.step(); optimizer.zero_grad()``, under
  ``torch.autocast`` where ``trainer.precision`` is ``bf16-mixed``.

Hydra overrides after the options change the model or trainer (``backbone=iresnet50 neck=linear
trainer.precision=bf16-mixed ...``); on CUDA every step ends with ``torch.cuda.synchronize()`` in both.

Each run's img/s is the batch size over its median step interval after the warm-up steps; the
methods alternate for ``--rounds`` rounds and the best run of each is reported (load from other
processes only slows runs down), with the ratio Lightning/bare (goal ≥ 0.97).

Usage: ``python -m benchmarks.step_overhead [--steps 30] [--rounds 3] [--batch-size 32] [--image-size 112]
[--device cpu] [--logger wandb|csv|tensorboard] [OVERRIDE ...]`` (about 1-2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig
from torch.utils.data import DataLoader, TensorDataset

from facerec.callbacks import FeaturePlot
from facerec.module.face_module import FaceRecognitionModule
from facerec.run.components import instantiate_all

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
NUM_CLASSES = 100
GOAL = 0.97


class StepTimes(L.Callback):
    """Records ``time.perf_counter()`` at the end of every training batch (once CUDA has finished it)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning ``trainer.precision``: bfloat16 for ``bf16-mixed``, None for float32.

    Raises:
        ValueError: For other precisions (fp16 would need a gradient scaler in the bare loops).
    """
    dtypes = {"bf16-mixed": torch.bfloat16, "32-true": None, "32": None}
    if str(precision) not in dtypes:
        raise ValueError(f"trainer.precision={precision}: the bare loops support {', '.join(dtypes)}")
    return dtypes[str(precision)]


def build(args: argparse.Namespace, *overrides: str) -> tuple[FaceRecognitionModule, DictConfig]:
    """The quickstart model and its composed config (``args.overrides``, then ``overrides`` added)."""
    overrides = (
        "experiment=quickstart", f"data.batch_size={args.batch_size}", f"logger={args.logger}", *args.overrides,
        *overrides,
    )  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    torch.manual_seed(0)
    names = [f"id{i}" for i in range(NUM_CLASSES)]
    return instantiate(cfg.model, num_classes=NUM_CLASSES, class_names=names, _recursive_=False), cfg


def data(args: argparse.Namespace) -> TensorDataset:
    """``warmup + steps`` random batches of ``image_size``² images and labels."""
    n = (args.warmup + args.steps) * args.batch_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, args.image_size, args.image_size, generator=generator) * 2 - 1
    return TensorDataset(images, torch.randint(0, NUM_CLASSES, (n,), generator=generator))


def images_per_second(times: list[float], args: argparse.Namespace) -> float:
    """Steady-state img/s from step-end timestamps: batch size / median step interval after warm-up."""
    steady = times[args.warmup - 1 :]
    intervals = [end - start for start, end in itertools.pairwise(steady)]
    return args.batch_size / statistics.median(intervals)


def lightning_run(dataset: TensorDataset, args: argparse.Namespace) -> float:
    """img/s of ``Trainer.fit`` with facerec's configured callbacks and loggers."""
    timer = StepTimes()
    with tempfile.TemporaryDirectory() as tmp:
        model, cfg = build(args, f"paths.output_dir={tmp}")
        callbacks = [c for c in instantiate_all(cfg.callbacks) if not isinstance(c, FeaturePlot)]
        trainer = instantiate(
            cfg.trainer, accelerator=args.device, max_epochs=1, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, logger=instantiate_all(cfg.logger),
            callbacks=[timer, *callbacks],
        )  # fmt: skip
        trainer.fit(model, train_dataloaders=DataLoader(dataset, batch_size=args.batch_size))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()  # the next round starts a new W&B run, as a new train.py would
    return images_per_second(timer.times, args)


def bare_run(dataset: TensorDataset, args: argparse.Namespace) -> float:
    """img/s of a plain PyTorch loop over the same model, optimizer and batches."""
    model, cfg = build(args)
    model = model.to(args.device).train()
    optimizer = instantiate(cfg.optimizer, _partial_=True)(model.parameters())
    dtype = autocast_dtype(cfg.trainer.precision)
    times = []
    for images, labels in DataLoader(dataset, batch_size=args.batch_size):
        images, labels = images.to(args.device), labels.to(args.device)
        with torch.autocast(torch.device(args.device).type, dtype=dtype, enabled=dtype is not None):
            loss = model.head(model.net(images), labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if images.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return images_per_second(times, args)


def main() -> None:
    """Prints img/s of both methods per round, the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--logger", default="wandb", choices=sorted(p.stem for p in (CONF_DIR / "logger").glob("*.yaml"))
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the model and trainer, e.g. backbone=resnet18")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    dataset = data(args)
    results: dict[str, list[float]] = {"bare": [], "lightning": []}
    for round_index in range(args.rounds):
        results["bare"].append(bare_run(dataset, args))
        results["lightning"].append(lightning_run(dataset, args))
        print(
            f"round {round_index}: bare {results['bare'][-1]:.1f} img/s, lightning {results['lightning'][-1]:.1f} img/s"
        )
    bare, lightning = (max(results[k]) for k in ("bare", "lightning"))
    print(
        f"\nquickstart model {' '.join(args.overrides)}, batch {args.batch_size}, {args.image_size}², {args.device}, "
        f"{args.steps} timed steps per run, "
        f"facerec callbacks, {args.logger} logger"
    )
    print(f"bare PyTorch loop    {bare:8.1f} img/s")
    print(f"facerec (Lightning)  {lightning:8.1f} img/s")
    print(f"ratio                {lightning / bare:8.3f}  (goal ≥ {GOAL})")


if __name__ == "__main__":
    main()
