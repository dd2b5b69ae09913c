"""Verification throughput: the callback path against a bare ``model(x)`` loop, in one run.

Generates a synthetic verification set of LFW's size (6,000 pairs over about 5,200 held-out 32x32
faces, so the per-evaluation costs, scoring and the ROC PNG, weigh as they do on LFW) in a temporary
directory, builds the ``experiment=smoke`` model (timm ``test_resnet``, flip TTA off so both paths do
one forward pass per image) and measures embeddings/s of

* the callback path: ``trainer.validate`` with :class:`~facerec.callbacks.VerificationCallback`
  (inference mode, batching, gathering, scoring and the ROC PNG included), and
* a bare loop: ``model(x)`` under ``torch.inference_mode`` over the *same* validation DataLoader
  (same batch size, images decoded and transformed by the loader in both paths),

then prints the ratio callback/bare (goal >= 0.9). Each path runs ``--repeats`` times after a
warm-up; the best time counts.

Usage::

    python -m benchmarks.eval_throughput [--batch-size 64] [--repeats 3] [--threads 2]  # from the project root
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from benchmarks.step_overhead import autocast_dtype
from facerec.callbacks import VerificationCallback
from facerec.data import FaceDataModule
from facerec.module.face_module import FaceRecognitionModule

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GOAL = 0.9
LFW_SIZED = (
    "data.synthetic.heldout_identities=600",
    "data.synthetic.heldout_images_per_identity=10",
    "data.synthetic.pairs_per_fold=300",
)


def build(data_dir: Path, batch_size: int, *overrides: str) -> tuple[FaceRecognitionModule, FaceDataModule]:
    """The smoke model (no flip TTA) and a datamodule over a verification set generated as ``overrides`` say."""
    overrides = [
        "experiment=smoke",
        f"paths.data_dir={data_dir}",
        "model.flip_test=false",
        f"data.eval_batch_size={batch_size}",
        *overrides,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    model = instantiate(cfg.model, num_classes=8, class_names=[str(i) for i in range(8)], _recursive_=False)
    datamodule = instantiate(cfg.data, root=None)
    datamodule.prepare_data()
    datamodule.setup("validate")
    return model.eval(), datamodule


def callback_seconds(
    model: FaceRecognitionModule, datamodule: FaceDataModule, run_dir: Path, device: str, precision: str
) -> float:
    """Seconds of one ``trainer.validate`` with the verification callback on ``device`` at ``precision``."""
    trainer = L.Trainer(
        accelerator=device,
        precision=precision,
        logger=False,
        callbacks=[VerificationCallback()],
        default_root_dir=str(run_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    start = time.perf_counter()
    trainer.validate(model, datamodule=datamodule, verbose=False)
    return time.perf_counter() - start


def bare_seconds(model: FaceRecognitionModule, datamodule: FaceDataModule, device: str, precision: str) -> float:
    """Seconds of ``model(x)`` over the validation DataLoader under ``torch.inference_mode`` (and autocast for
    ``precision``), on ``device``."""
    model = model.to(device)
    dtype = autocast_dtype(precision)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
        for images, _ in datamodule.val_dataloader()[0]:
            model(images.to(device))
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def best_seconds(
    model: FaceRecognitionModule, datamodule: FaceDataModule, run_dir: Path, repeats: int, device: str, precision: str
) -> tuple[float, float]:
    """Best seconds of the callback path and of the bare loop over ``repeats`` runs each, after a warm-up of both."""
    callback_seconds(model, datamodule, run_dir, device, precision)
    bare_seconds(model, datamodule, device, precision)
    callback = min(callback_seconds(model, datamodule, run_dir, device, precision) for _ in range(repeats))
    bare = min(bare_seconds(model, datamodule, device, precision) for _ in range(repeats))
    return callback, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        model, datamodule = build(Path(tmp) / "data", args.batch_size, *LFW_SIZED)
        images = len(datamodule.val_sets[0].images)
        callback, bare = best_seconds(model, datamodule, Path(tmp) / "run", args.repeats, "cpu", "32-true")
    ratio = bare / callback
    pairs = len(datamodule.val_sets[0])
    setting = f"batch {args.batch_size}, {args.threads} threads, best of {args.repeats}"
    print(f"{images} images (32x32), {pairs} pairs, {setting}")
    print(f"callback path (trainer.validate + VerificationCallback): {images / callback:9.1f} embeddings/s")
    print(f"bare model(x) loop, same DataLoader:                      {images / bare:9.1f} embeddings/s")
    print(f"ratio callback/bare: {ratio:.2f} (goal >= {GOAL}) {'OK' if ratio >= GOAL else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
