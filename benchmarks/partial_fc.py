"""Step time and peak memory of an ArcFace head alone: full softmax vs Partial FC, 10k to 1M classes.

Usage: ``python -m benchmarks.partial_fc`` (CPU default: E=128, B=64, best of 3 rounds, about 5 minutes).
GPU run as in insightface's setting: ``python -m benchmarks.partial_fc --device cuda
--embedding-size 512 --batch-size 128``. One process, so Partial FC only samples (world size 1);
with W GPUs each rank holds C/W classes and its memory shrinks by W again.

A step is forward + backward + SGD update of the head's centres; Partial FC with r < 1 trains only
the sampled centres (their rows and momentum are moved into a small parameter and back). Peak memory is what the step
allocates above what the head already holds (weights): on CUDA ``torch.cuda.max_memory_allocated``;
on the CPU the process' peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``), which
also counts allocator caching, so it is an upper bound.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import torch

from facerec.heads import create_head

PROC = Path("/proc/self")


def _rss_kib(field: str) -> int:
    for line in (PROC / "status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak(device: torch.device) -> int:
    """Resets the peak counter; returns the current usage in bytes."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    (PROC / "clear_refs").write_text("5")
    return _rss_kib("VmRSS:") * 1024


def _peak(device: torch.device) -> int:
    """Peak usage in bytes since :func:`_reset_peak`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return _rss_kib("VmHWM:") * 1024


def measure(num_classes: int, sample_rate: float | None, args: argparse.Namespace) -> tuple[float, float]:
    """Median step milliseconds and peak extra MiB for one head; ``sample_rate=None``: full softmax."""
    torch.manual_seed(0)
    classifier = {"name": "full"} if sample_rate is None else {"name": "partial_fc", "sample_rate": sample_rate}
    head = create_head("arcface", args.embedding_size, num_classes, classifier=classifier).to(args.device)
    return measure_head(head, num_classes, args)


def measure_head(head: torch.nn.Module, num_classes: int, args: argparse.Namespace) -> tuple[float, float]:
    """:func:`measure` of ``head``: a facerec head, or a module with the same ``param_groups``,
    ``before_optimizer_step`` and ``after_optimizer_step`` and whose output has a ``loss``."""
    device = torch.device(args.device)
    optimizer = torch.optim.SGD(head.param_groups(), lr=0.1, momentum=0.9)
    embeddings = torch.randn(args.batch_size, args.embedding_size, device=device)
    labels = torch.randint(0, num_classes, (args.batch_size,), device=device)
    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            gc.collect()
            base = _reset_peak(device)
        start = time.perf_counter()
        x = embeddings.detach().requires_grad_()
        head(x, labels).loss.backward()
        head.before_optimizer_step(optimizer)
        optimizer.step()
        head.after_optimizer_step()
        optimizer.zero_grad(set_to_none=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = max(_peak(device) - base, 0)  # the RSS can end below the start (freed pages)
    del head, optimizer
    gc.collect()
    return statistics.median(times) * 1e3, peak / 2**20


def best_of_rounds(num_classes: int, args: argparse.Namespace) -> tuple[float, float, float, float]:
    """Full softmax's and Partial FC's step ms and peak MiB, each the lowest of ``args.rounds`` alternating rounds."""
    rounds = []
    for _ in range(args.rounds):
        rounds.append((*measure(num_classes, None, args), *measure(num_classes, args.sample_rate, args)))
    return tuple(min(values) for values in zip(*rounds, strict=True))


def main() -> None:
    """Prints a table: classes, head, step ms, peak extra MiB, and Partial FC's ratios to full softmax."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--embedding-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--sample-rate", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="report the best of this many rounds per head")
    args = parser.parse_args()
    memory = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "CPU peak RSS (VmHWM)"
    print(
        f"ArcFace head, E={args.embedding_size}, B={args.batch_size}, {args.device}; memory: {memory}; "
        f"best of {args.rounds} rounds"
    )
    print(f"{'classes':>9}  {'head':<16}  {'step ms':>9}  {'peak MiB':>9}  {'speed-up':>8}  {'memory':>6}")
    for num_classes in args.classes:
        full_ms, full_mib, ms, mib = best_of_rounds(num_classes, args)
        print(f"{num_classes:>9,}  {'full softmax':<16}  {full_ms:>9.1f}  {full_mib:>9.1f}", flush=True)
        label = f"partial FC r={args.sample_rate}"
        print(
            f"{num_classes:>9,}  {label:<16}  {ms:>9.1f}  {mib:>9.1f}  {full_ms / ms:>7.2f}x  {mib / full_mib:>5.2f}x",
            flush=True,
        )
    print("goal at 1M classes: speed-up >= 5x, memory <= 0.25x of full softmax")


if __name__ == "__main__":
    main()
