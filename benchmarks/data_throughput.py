"""Training-loader throughput against the model's training step, measured in one run.

Everything follows the ``experiment=quickstart`` recipe (``conf/train.yaml`` composed as
``facerec.run.training.train`` does): a synthetic identity folder of JPEGs at the recipe's stored size
(``data.synthetic.image_size``) and its ``folder2rec`` copy are generated in a temporary
directory, then images/s are measured of

* the training DataLoader of :class:`~facerec.data.FaceDataModule` at the recipe's
  ``data.image_size`` and ``data.augment``, for both formats and each ``--workers`` count (the
  recipe's ``data.num_workers`` always included), and
* one training step (forward, backward, optimizer step) of the recipe's model at
  ``data.image_size`` on random batches, and
* decoding alone, one JPEG at a time in this process: the loader's decoder
  (:func:`facerec.data.decode.decode_image`, OpenCV) against ``torchvision.io.decode_jpeg`` (RGB,
  EXIF orientation applied, as an (H, W, 3) array like the loader's), with whether their pixels agree.

Every row is printed with its ratio loader/step. The goal (the loader at least 3x faster than the
step, so that it never starves training) is judged at the recipe's ``data.num_workers``.

Usage::

    python -m benchmarks.data_throughput [--batches 8] [--batch-size 64] [--workers 0 1 2]  # from the project root
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torchvision.io import ImageReadMode, decode_jpeg

from facerec.data import FaceDataModule
from facerec.data.decode import decode_image
from facerec.data.synthetic import SyntheticSpec, generate
from facerec.data.tools import folder_to_rec
from facerec.module.face_module import FaceRecognitionModule

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GOAL = 3.0


def recipe_config(*overrides: str) -> DictConfig:
    """The composed ``experiment=quickstart`` training config, ``overrides`` added."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=["experiment=quickstart", *overrides])


def loader_throughput(
    root: Path, data_format: str, workers: int, batch_size: int, batches: int, cfg: DictConfig
) -> float:
    """Images/s of the training DataLoader over ``batches`` batches, after one warm-up batch.

    The image size and augmentation are the recipe's (``cfg.data``).

    Raises:
        ValueError: If the training set has fewer than ``batches + 1`` full batches.
    """
    datamodule = FaceDataModule(
        root=str(root),
        format=data_format,
        image_size=tuple(cfg.data.image_size),
        augment=cfg.data.augment,
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=False,
        pin_memory=False,
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    if len(loader) < batches + 1:
        raise ValueError(f"{root}: {len(loader)} batches of {batch_size}, need {batches + 1}; generate more images")
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def decoder_throughput(folder: Path, repeats: int = 5) -> tuple[float, float, bool]:
    """Images/s of the loader's decoder and of torchvision's on the JPEGs under ``folder``; identical pixels?

    One image at a time, best of ``repeats`` passes over all files, the two decoders taking turns.
    """
    blobs = [path.read_bytes() for path in sorted(folder.rglob("*.jpg"))]
    tensors = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]

    def with_opencv() -> list[np.ndarray]:
        return [decode_image(blob) for blob in blobs]

    def with_torchvision() -> list[np.ndarray]:
        decode = partial(decode_jpeg, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        return [decode(tensor).permute(1, 2, 0).numpy() for tensor in tensors]

    identical = all(np.array_equal(a, b) for a, b in zip(with_opencv(), with_torchvision(), strict=True))
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for index, decode in enumerate((with_opencv, with_torchvision)):
            start = time.perf_counter()
            decode()
            best[index] = min(best[index], time.perf_counter() - start)
    return len(blobs) / best[0], len(blobs) / best[1], identical


def recipe_model(cfg: DictConfig, num_classes: int) -> FaceRecognitionModule:
    """The recipe's model, built like ``facerec.run.training.train`` (no LR schedule)."""
    class_names = [str(label) for label in range(num_classes)]
    return instantiate(cfg.model, num_classes=num_classes, class_names=class_names, scheduler=None, _recursive_=False)


def step_throughput(cfg: DictConfig, num_classes: int, batch_size: int, batches: int, device: str) -> float:
    """Images/s of forward + backward + optimizer step of the recipe's model on random batches.

    The first step (warm-up) is not timed; ``training_step``'s ``self.log`` is a no-op without a
    Trainer, so its warning is silenced.
    """
    model = recipe_model(cfg, num_classes).to(device).train()
    optimizer = model.configure_optimizers()["optimizer"]
    images = torch.randn(batch_size, 3, *cfg.data.image_size, device=device)
    labels = torch.randint(num_classes, (batch_size,), device=device)
    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    timings = []
    for batch_idx in range(batches + 1):
        start = time.perf_counter()
        loss = model.training_step((images, labels), batch_idx)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return batches * batch_size / sum(timings[1:])


def main(argv: list[str] | None = None) -> None:
    """Runs the measurements and prints the table and the verdict at the recipe's worker count."""
    cfg = recipe_config()
    height, width = cfg.data.image_size
    configured_workers = int(cfg.data.num_workers)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=40, help="synthetic training identities")
    parser.add_argument("--images-per-identity", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=cfg.data.batch_size, help="default: the recipe's")
    parser.add_argument("--batches", type=int, default=8, help="timed batches per loader measurement")
    parser.add_argument("--step-batches", type=int, default=4, help="timed training steps")
    parser.add_argument("--device", default="cpu", help="device of the training step: cpu (quickstart) or cuda")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1, 2], help="the recipe's data.num_workers is always added"
    )
    args = parser.parse_args(argv)
    workers_list = sorted({*args.workers, configured_workers})
    logging.basicConfig(level=logging.WARNING)
    spec = SyntheticSpec(
        num_identities=args.identities,
        images_per_identity=args.images_per_identity,
        heldout_identities=2,
        heldout_images_per_identity=2,
        folds=1,
        pairs_per_fold=1,
        image_size=cfg.data.synthetic.image_size,
    )
    with tempfile.TemporaryDirectory(prefix="facerec-throughput-") as tmp:
        start = time.perf_counter()
        folder = generate(Path(tmp) / "synthetic", spec) / "train"
        folder_to_rec(folder, Path(tmp) / "rec")
        print(
            f"synthetic set: {spec.num_identities} identities x {spec.images_per_identity} images, "
            f"{spec.image_size}x{spec.image_size} JPEG ({time.perf_counter() - start:.1f} s to generate and pack)"
        )
        print(
            f"experiment=quickstart: data.image_size {height}x{width}, data.augment={cfg.data.augment}, "
            f"data.num_workers={configured_workers}; batch size {args.batch_size}"
        )
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, training step on {args.device}\n")
        step = step_throughput(cfg, spec.num_identities, args.batch_size, args.step_batches, args.device)
        optimizer = cfg.optimizer._target_.rsplit(".", 1)[-1]
        rows = [(f"training step (quickstart model, fwd+bwd+{optimizer})", "-", step, None)]
        at_configured: dict[str, float] = {}
        for data_format, root in (("folder", folder), ("rec", Path(tmp) / "rec")):
            for workers in workers_list:
                rate = loader_throughput(root, data_format, workers, args.batch_size, args.batches, cfg)
                rows.append((f"loader data.format={data_format}", str(workers), rate, rate / step))
                if workers == configured_workers:
                    at_configured[data_format] = rate / step
        opencv, torchvision, identical = decoder_throughput(folder)
        rows.append(("decode only: facerec.data.decode (OpenCV)", "-", opencv, None))
        rows.append(("decode only: torchvision.io.decode_jpeg", "-", torchvision, None))
    header = ("measurement", "workers", "images/s", "loader/step")
    cells = [header] + [
        (name, workers, f"{rate:.0f}", "" if ratio is None else f"{ratio:.1f}x") for name, workers, rate, ratio in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for number, row in enumerate(cells):
        print(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if number == 0:
            print("  ".join("-" * width for width in widths))
    verdict = "meets" if min(at_configured.values()) >= GOAL else "misses"
    ratios = ", ".join(f"{data_format} {ratio:.1f}x" for data_format, ratio in at_configured.items())
    print(
        f"\nat the recipe's data.num_workers={configured_workers}: loader/step {ratios}; "
        f"{verdict} the goal of {GOAL:.0f}x (both formats)"
    )
    print(
        f"decode only: torchvision/OpenCV {torchvision / opencv:.2f}x, "
        f"pixels {'identical' if identical else 'DIFFERENT'} on every training JPEG (EXIF orientation applied)"
    )


if __name__ == "__main__":
    main()
