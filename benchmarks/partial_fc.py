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

Scale across processes: ``python -m benchmarks.partial_fc --world 4 --classes 2000000`` (gloo on the CPU;
``--device cuda`` with NCCL, one GPU per rank). Each rank builds only its shard, trains a few steps (r = 0.1,
SGD with momentum), saves a sharded checkpoint as ``trainer=ddp`` does (each rank writes its rows, rank 0 the
file) and reads it back. Per rank it reports the peak memory of the classifier (centres + momentum +
transients, above what the process held before building it) while building, stepping and saving, against
``full / W`` (``full``: the whole centre matrix and its momentum, what every rank held before sharding) and
the goal ``1.1 × full / W + chunk`` (``chunk``: the larger of one initialisation block and a step's
activations: the n sampled rows with their gradient and momentum, and six (B·W, n) float32 buffers — cosines,
logits, probabilities and their gradients); and the save and load times. On the CPU the peak resident set is
measured after returning freed heap pages to the system (``malloc_trim``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facerec.heads import create_head
from facerec.heads.classifiers.partial_fc_checkpoint import prepare_save, take_rows, write_shard
from facerec.heads.classifiers.seeded_rows import BLOCK_ROWS

PROC = Path("/proc/self")


def _rss_kib(field: str) -> int:
    for line in (PROC / "status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak(device: torch.device, trim: bool = False) -> int:
    """Resets the peak counter; returns the current usage in bytes. ``trim``: on the CPU, first return freed heap
    pages to the system (``malloc_trim``), so that the RSS is what is held (the scale benchmark)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
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


def _step(head: torch.nn.Module, optimizer: torch.optim.Optimizer, args: argparse.Namespace, device) -> None:
    """One training step of the head on random embeddings and labels."""
    x = torch.randn(args.batch_size, args.embedding_size, device=device, requires_grad=True)
    labels = torch.randint(0, args.classes[0], (args.batch_size,), device=device)
    head(x, labels).loss.backward()
    head.before_optimizer_step(optimizer)
    optimizer.step()
    head.after_optimizer_step()
    optimizer.zero_grad(set_to_none=True)


def _phase(device: torch.device, base: int, work) -> tuple[float, float]:
    """Runs ``work()``; its seconds and this process' peak memory above ``base`` bytes (MiB) meanwhile."""
    gc.collect()
    _reset_peak(device, trim=True)
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, max(_peak(device) - base, 0) / 2**20


def scale_worker(rank: int, port: int, args: argparse.Namespace, folder: Path) -> None:
    """One rank of the scale benchmark; writes its figures to ``folder/rank<k>.json``."""
    device = torch.device(args.device, rank) if args.device == "cuda" else torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.world)
    torch.set_num_threads(max(1, torch.get_num_threads() // args.world))
    try:
        create_head("arcface", 2, args.world, classifier={"name": "partial_fc"})  # imports, code pages: not counted
        gc.collect()
        base = _reset_peak(device, trim=True)
        torch.manual_seed(0)
        holder = {}

        def build() -> None:
            classifier = {"name": "partial_fc", "sample_rate": args.sample_rate}
            holder["head"] = create_head("arcface", args.embedding_size, args.classes[0], classifier=classifier)
            holder["head"].to(device).setup_distributed(rank, args.world)

        figures = {"build": _phase(device, base, build)}
        head = holder["head"]
        optimizer = torch.optim.SGD(head.param_groups(), lr=0.1, momentum=0.9)
        for _ in range(args.warmup):
            _step(head, optimizer, args, device)

        def train() -> None:
            for _ in range(args.steps):
                _step(head, optimizer, args, device)

        figures["step"] = _phase(device, base, train)
        path = folder / "scale.ckpt"

        def save() -> None:
            checkpoint = {"state_dict": head.state_dict(prefix="head."), "optimizer_states": [optimizer.state_dict()]}
            prepare_save(head.classifier, "head.classifier.", checkpoint, [optimizer])
            save_id = [uuid.uuid4().hex[:16]]
            dist.broadcast_object_list(save_id)
            write_shard(checkpoint, path, save_id[0])
            dist.barrier()
            if rank == 0:
                torch.save(checkpoint, path)
            dist.barrier()

        figures["save"] = _phase(device, base, save)

        def load() -> None:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            take_rows(head.classifier, "head.classifier.", checkpoint, path)
            head.load_state_dict({k.removeprefix("head."): v for k, v in checkpoint["state_dict"].items()})
            dist.barrier()

        figures["load"] = _phase(device, base, load)
        sampled = max(1, int(args.sample_rate * len(head.classifier.weight)))
        activations = 3 * sampled * args.embedding_size + 6 * args.world * args.batch_size * sampled
        figures["chunk_mib"] = max(BLOCK_ROWS * args.embedding_size, activations) * 4 / 2**20
        (folder / f"rank{rank}.json").write_text(json.dumps(figures))
    finally:
        dist.destroy_process_group()


def scale(args: argparse.Namespace) -> bool:
    """Runs :func:`scale_worker` on ``args.world`` processes; prints the per-rank table; whether all met the goal."""
    num_classes, world = args.classes[0], args.world
    full_mib = 2 * num_classes * args.embedding_size * 4 / 2**20  # centres + momentum, float32
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        port = _free_port()
        mp.start_processes(scale_worker, args=(port, args, Path(tmp)), nprocs=world, start_method="spawn")
        ranks = [json.loads((Path(tmp) / f"rank{rank}.json").read_text()) for rank in range(world)]
    memory = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "CPU peak RSS (VmHWM)"
    print(
        f"Partial FC at scale: {num_classes:,} classes, E={args.embedding_size}, r={args.sample_rate}, "
        f"B={args.batch_size} per rank, W={world} ({args.device}); memory: {memory} above the process before the head"
    )
    print(f"full = whole centres + momentum = {full_mib:,.0f} MiB; full / W = {full_mib / world:,.0f} MiB")
    header = f"{'rank':>4}  {'build MiB':>9}  {'step MiB':>9}  {'save MiB':>9}  {'load MiB':>9}  {'goal MiB':>9}"
    print(f"{header}  {'peak/(full/W)':>13}  {'save s':>7}  {'load s':>7}  goal met")
    met = True
    for rank, figures in enumerate(ranks):
        goal = 1.1 * full_mib / world + figures["chunk_mib"]
        peak = max(figures[phase][1] for phase in ("build", "step", "save"))
        ok = peak <= goal
        met &= ok
        mib = "  ".join(f"{figures[phase][1]:>9,.0f}" for phase in ("build", "step", "save", "load"))
        print(
            f"{rank:>4}  {mib}  {goal:>9,.0f}  {peak / (full_mib / world):>13.2f}  {figures['save'][0]:>7.2f}  "
            f"{figures['load'][0]:>7.2f}  {'yes' if ok else 'NO'}"
        )
    print("goal: every rank's build, step and save peak <= 1.1 x full / W + chunk (load: the checkpoint's rows are")
    print("held beside the centres until copied in, as when Lightning restores)")
    return met


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    """Prints a table: classes, head, step ms, peak extra MiB, and Partial FC's ratios to full softmax; with
    ``--world W > 1`` the scale benchmark (exit status 1 if a rank misses its memory goal)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--embedding-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--sample-rate", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="report the best of this many rounds per head")
    parser.add_argument("--world", type=int, default=1, help="processes of the scale benchmark (> 1 runs it)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the scale benchmark's checkpoint")
    args = parser.parse_args()
    if args.world > 1:
        if len(args.classes) != 1:
            parser.error("the scale benchmark (--world > 1) takes one --classes value")
        raise SystemExit(0 if scale(args) else 1)
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
