"""Training throughput of the face nets and timm ResNets: images/s for forward + backward.

Each net is the full embedding network (backbone + ``linear`` neck, 512-d) at 112×112, as trained.

Usage:
    python -m benchmarks.backbones                       # batch 64, every face net + resnet18/50
    python -m benchmarks.backbones --models iresnet50 --device cuda --channels-last --amp
"""

from __future__ import annotations

import argparse
import gc
import time

import timm
import torch

from facerec.models import build_embedding_net

FACE_NETS = sorted(timm.list_models(["iresnet*", "mobilefacenet*"]), key=lambda n: (n[0], len(n), n))
DEFAULT_MODELS = [*FACE_NETS, "resnet18", "resnet50"]
NECK = {"_target_": "facerec.models.LinearNeck", "dropout": 0.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="timm names")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (torch's default)")
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(name: str, args: argparse.Namespace, device: torch.device) -> float:
    """Forward + backward throughput of backbone ``name`` with a linear neck."""
    backbone = {
        "_target_": "facerec.models.create_backbone",
        "name": name,
        "channels_last": args.channels_last,
    }
    size = (args.image_size, args.image_size)
    net = build_embedding_net(backbone, NECK, 512, size).to(device).train()
    images = torch.randn(args.batch_size, 3, *size, device=device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = net(images).float().square().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)
    synchronize(device)
    return args.batch_size * args.steps / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
        f"size={args.image_size} warmup={args.warmup} steps={args.steps} amp={args.amp} "
        f"channels_last={args.channels_last} torch={torch.__version__} timm={timm.__version__}"
    )
    print(f"{'model':<22}{'backbone params (M)':>20}{'img/s':>10}")
    for name in args.models:
        with torch.device("meta"):
            params = sum(p.numel() for p in timm.create_model(name, num_classes=0).parameters())
        throughput = images_per_second(name, args, device)
        print(f"{name:<22}{params / 1e6:>20.2f}{throughput:>10.1f}", flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
