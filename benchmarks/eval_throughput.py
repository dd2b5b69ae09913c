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

from facerec.callbacks import VerificationCallback

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GOAL = 0.9


def build(data_dir: Path, batch_size: int):
    """The smoke model (no flip TTA) and a datamodule over a generated verification set."""
    overrides = [
        "experiment=smoke",
        f"paths.data_dir={data_dir}",
        "model.flip_test=false",
        f"data.eval_batch_size={batch_size}",
        "data.synthetic.heldout_identities=600",
        "data.synthetic.heldout_images_per_identity=10",
        "data.synthetic.pairs_per_fold=300",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    model = instantiate(cfg.model, num_classes=8, class_names=[str(i) for i in range(8)], _recursive_=False)
    datamodule = instantiate(cfg.data, root=None)
    datamodule.prepare_data()
    datamodule.setup("validate")
    return model.eval(), datamodule


def callback_seconds(model, datamodule, run_dir: Path) -> float:
    """Seconds of one ``trainer.validate`` with the verification callback."""
    trainer = L.Trainer(
        accelerator="cpu",
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


def bare_seconds(model, datamodule) -> float:
    """Seconds of ``model(x)`` over the validation DataLoader under ``torch.inference_mode``."""
    start = time.perf_counter()
    with torch.inference_mode():
        for images, _ in datamodule.val_dataloader()[0]:
            model(images)
    return time.perf_counter() - start


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
        model, datamodule = build(Path(tmp) / "data", args.batch_size)
        images = len(datamodule.val_sets[0].images)
        callback_seconds(model, datamodule, Path(tmp) / "run")
        bare_seconds(model, datamodule)
        callback = min(callback_seconds(model, datamodule, Path(tmp) / "run") for _ in range(args.repeats))
        bare = min(bare_seconds(model, datamodule) for _ in range(args.repeats))
    ratio = bare / callback
    pairs = len(datamodule.val_sets[0])
    setting = f"batch {args.batch_size}, {args.threads} threads, best of {args.repeats}"
    print(f"{images} images (32x32), {pairs} pairs, {setting}")
    print(f"callback path (trainer.validate + VerificationCallback): {images / callback:9.1f} embeddings/s")
    print(f"bare model(x) loop, same DataLoader:                      {images / bare:9.1f} embeddings/s")
    print(f"ratio callback/bare: {ratio:.2f} (goal >= {GOAL}) {'OK' if ratio >= GOAL else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
