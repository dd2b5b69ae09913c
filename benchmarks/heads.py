"""Forward + backward time of every head relative to a plain linear layer + cross-entropy.

Usage: ``python -m benchmarks.heads [--device cuda] [--rounds 10]``. Defaults: 512-d embeddings,
batch 128, 10,575 classes (CASIA-WebFace). Heads are timed round-robin (one step of each per
round) and the median per head is reported, so load changes hit every head alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import Tensor, nn

from facerec.heads import Head, build_head

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def conf_heads(embedding_size: int, num_classes: int) -> dict[str, Head]:
    """Every ``conf/head/<name>.yaml`` built as ``train.py head=<name>`` would (``classifier=full``)."""
    heads = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for path in sorted((CONF_DIR / "head").glob("*.yaml")):
            cfg = compose(config_name="train", overrides=[f"head={path.stem}"])
            heads[path.stem] = build_head(OmegaConf.to_container(cfg.head, resolve=True), embedding_size, num_classes)
    return heads


class PlainLinear(nn.Module):
    """The baseline: ``x @ W.T`` (no bias) and cross-entropy."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar CE for (B, E) embeddings and (B,) labels."""
        return F.cross_entropy(embeddings @ self.weight.T, labels)


def step_fn(head: nn.Module, embeddings: Tensor, labels: Tensor) -> Callable[[], None]:
    """One forward + backward of ``head``, synchronised on CUDA."""

    def step() -> None:
        x = embeddings.detach().requires_grad_()
        out = head(x, labels)
        loss = out if isinstance(out, Tensor) else out.loss
        loss.backward()
        for p in head.parameters():
            p.grad = None
        if embeddings.is_cuda:
            torch.cuda.synchronize()

    return step


def main() -> None:
    """Times every conf/head head and prints milliseconds and the ratio to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--embedding-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=10575)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    device = torch.device(args.device)
    embeddings = torch.randn(args.batch_size, args.embedding_size, device=device)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    heads = {"linear+CE (baseline)": PlainLinear(args.embedding_size, args.num_classes)}
    heads |= conf_heads(args.embedding_size, args.num_classes)
    steps = {name: step_fn(head.to(device).train(), embeddings, labels) for name, head in heads.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(args.warmup + args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_index >= args.warmup:
                times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(t) for name, t in times.items()}
    baseline = medians["linear+CE (baseline)"]
    print(
        f"device={device} threads={torch.get_num_threads()} E={args.embedding_size} "
        f"B={args.batch_size} C={args.num_classes} rounds={args.rounds} (median)"
    )
    print(f"{'head':<22} {'fwd+bwd ms':>10} {'x baseline':>10}")
    for name, median in medians.items():
        print(f"{name:<22} {median * 1e3:>10.2f} {median / baseline:>10.2f}")


if __name__ == "__main__":
    main()
