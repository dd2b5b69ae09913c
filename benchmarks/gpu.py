"""The first GPU hour in one command: ``pytest -m gpu`` and facerec against bare PyTorch, one table in RESULTS.md.

First ``pytest -m gpu`` in a child process (its summary line), then measurements, each a ratio against a bare
PyTorch loop measured in the same run through the functions of the other benchmarks:

* training step (:mod:`benchmarks.step_overhead`): iresnet50 + linear neck (512-d) + ArcFace over 100 classes at
  112×112, SGD, channels-last, bf16-mixed, batch 128, eager and with ``model.compile=true``: images/s of
  ``Trainer.fit`` with facerec's callbacks (csv logger) against ``head(net(x), y)``, backward, step;
* verification (:mod:`benchmarks.eval_throughput`): the same net (bf16, channels-last) on a generated LFW-sized
  set of 112×112 faces (about 5,200 faces in 6,000 pairs), embeddings/s of ``trainer.validate`` with the
  verification callback against ``model(x)`` over the same DataLoader (8 workers);
* Partial FC (:mod:`benchmarks.partial_fc`): an ArcFace head over 2M classes (E=512, B=128, fp32, SGD with
  momentum), step ms and peak allocated MiB of Partial FC r=0.1 and of the full softmax against a bare
  normalised-linear + cross-entropy + SGD step over all 2M centres;
* data loading (:mod:`benchmarks.data_throughput`): images/s of the training DataLoader (``augment=default``,
  batch 64) over a ``.rec`` of 3,200 generated 112×112 faces for 0, 1, 2, 4, 8 workers, per worker against one
  process decoding the same JPEGs (OpenCV), and which worker count keeps up with the fastest training step above.

Each section has fixed step counts and a time limit (SIGALRM), all within ``budget_s`` (under 8 minutes on one
GPU); a section that fails or runs out of time is recorded in the table, the others still run, and the exit
status is 1. The table replaces the section :data:`TITLE` of ``--results`` (appended when absent), with the
device's name, the date and the versions. Data is generated in a temporary directory; nothing is downloaded.

``--tiny`` shrinks everything (timm ``test_resnet``, 32×32 images, 2,000 classes, a few steps) into a dry run
of seconds; on the CPU training runs in float32 (bf16 is many times slower there) and ``torch.compile`` uses
the ``eager`` backend (inductor would compile C++ for minutes). On the CPU pytest runs beside the measurements
(there is no device to share) and its row comes last. The dry run's numbers are not benchmarks.

Usage::

    benchmarks/gpu.sh                                   # after make install, on a machine with one GPU
    benchmarks/gpu.sh --device cpu --tiny --results /tmp/RESULTS.md   # the dry run the test suite makes
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
import torch.nn.functional as F

from benchmarks import data_throughput, eval_throughput, partial_fc, step_overhead
from facerec.data.synthetic import SyntheticSpec, generate
from facerec.data.tools import folder_to_rec

REPO = Path(__file__).resolve().parents[1]
TITLE = "## GPU benchmark — `benchmarks/gpu.sh`"
HEADER = ("measurement", "facerec", "bare PyTorch", "facerec / bare", "setting")


@dataclass(frozen=True)
class Sizes:
    """What one mode (the full GPU run or ``--tiny``) measures, and the seconds each section may take."""

    model: tuple[str, ...]  # Hydra overrides of the model, shared by training and verification
    image_size: int
    batch_size: int
    train_steps: int
    eval_set: tuple[str, ...]  # Hydra overrides of the generated verification set
    eval_batch_size: int
    eval_repeats: int
    classes: int
    embedding_size: int
    head_batch_size: int
    head_steps: int
    loader_identities: int
    loader_images_per_identity: int
    loader_batch_size: int
    loader_batches: int
    workers: tuple[int, ...]
    limits: dict[str, float]  # section title → seconds
    budget_s: float


FULL = Sizes(
    model=("backbone=iresnet50", "neck=linear", "model.embedding_size=512", "backbone.channels_last=true"),
    image_size=112,
    batch_size=128,
    train_steps=20,
    eval_set=(*eval_throughput.LFW_SIZED, "data.synthetic.image_size=112", "data.num_workers=8"),
    eval_batch_size=256,
    eval_repeats=2,
    classes=2_000_000,
    embedding_size=512,
    head_batch_size=128,
    head_steps=8,
    loader_identities=64,
    loader_images_per_identity=50,
    loader_batch_size=64,
    loader_batches=48,
    workers=tuple(w for w in (0, 1, 2, 4, 8) if w <= (os.cpu_count() or 1)),
    limits={
        "pytest -m gpu": 150,
        "training, eager": 45,
        "training, torch.compile": 150,
        "verification": 50,
        "Partial FC": 60,
        "data loading": 50,
    },
    budget_s=450,
)
TINY = Sizes(
    model=("backbone=test_resnet", "model.embedding_size=16", "backbone.channels_last=true"),
    image_size=32,
    batch_size=8,
    train_steps=3,
    eval_set=(
        "data.synthetic.heldout_identities=10",
        "data.synthetic.heldout_images_per_identity=3",
        "data.synthetic.pairs_per_fold=1",
    ),
    eval_batch_size=16,
    eval_repeats=1,
    classes=2_000,
    embedding_size=128,
    head_batch_size=32,
    head_steps=2,
    loader_identities=8,
    loader_images_per_identity=10,
    loader_batch_size=16,
    loader_batches=3,
    workers=(0, 1, 2),
    limits={
        "pytest -m gpu": 90,
        "training, eager": 40,
        "training, torch.compile": 60,
        "verification": 40,
        "Partial FC": 30,
        "data loading": 40,
    },
    budget_s=200,
)


@dataclass
class Row:
    """One line of the table; ``facerec`` and ``bare`` are formatted values, ``ratio`` facerec / bare."""

    measurement: str
    facerec: str
    bare: str = ""
    ratio: str = ""
    setting: str = ""

    def cells(self) -> tuple[str, ...]:
        """The five cells, escaped for a Markdown table."""
        return tuple(
            str(cell).replace("|", "\\|").replace("\n", " ")
            for cell in (self.measurement, self.facerec, self.bare, self.ratio, self.setting)
        )


@dataclass
class Run:
    """What the sections share: the options, the sizes, a scratch folder and the fastest training step."""

    device: str
    sizes: Sizes
    scratch: Path
    step_images_per_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    pytest: subprocess.Popen | None = None

    @property
    def precision(self) -> str:
        """bf16-mixed on CUDA; float32 on the CPU, where bf16 is many times slower."""
        return "bf16-mixed" if torch.device(self.device).type == "cuda" else "32-true"


class SectionTimeout(Exception):
    """A section ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raises :class:`SectionTimeout` in this (main) thread once ``seconds`` have passed inside."""

    def expire(signum: int, frame: object) -> None:
        raise SectionTimeout(f"ran past its limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _rate(value: float, unit: str = "img/s") -> str:
    """``value`` rounded, with thousands separators and ``unit``."""
    return f"{value:,.0f} {unit}"


def _compile_backend(run: Run) -> contextlib.AbstractContextManager:
    """On the CPU, ``torch.compile`` with the ``eager`` backend (dynamo's tracing without inductor's C++ build)."""
    if torch.device(run.device).type == "cuda":
        return contextlib.nullcontext()
    return mock.patch.object(torch, "compile", functools.partial(torch.compile, backend="eager"))


def training(run: Run, compiled: bool) -> list[Row]:
    """Images/s of facerec's Lightning training step and of the bare loop, eager or ``model.compile=true``."""
    sizes = run.sizes
    args = argparse.Namespace(
        device=run.device, batch_size=sizes.batch_size, image_size=sizes.image_size, logger="csv",
        warmup=3 if compiled else 2, steps=sizes.train_steps,
        overrides=[*sizes.model, f"data.image_size=[{sizes.image_size},{sizes.image_size}]", "optimizer=sgd",
                   f"trainer.precision={run.precision}", f"model.compile={str(compiled).lower()}"],
    )  # fmt: skip
    dataset = step_overhead.data(args)
    with _compile_backend(run):
        bare = step_overhead.bare_run(dataset, args)
        lightning = step_overhead.lightning_run(dataset, args)
    run.step_images_per_s = max(run.step_images_per_s, lightning)
    backend = "" if not compiled or torch.device(run.device).type == "cuda" else " (backend=eager on the CPU)"
    setting = (
        f"{sizes.model[0].split('=')[1]} + ArcFace, {sizes.image_size}², batch {sizes.batch_size}, {run.precision}, "
        f"channels-last, SGD, {step_overhead.NUM_CLASSES} classes, callbacks + csv logger, "
        f"median of {sizes.train_steps} steps"
    )
    name = f"training step, {'torch.compile' + backend if compiled else 'eager'}"
    return [Row(name, _rate(lightning), _rate(bare), f"{lightning / bare:.3f}", setting)]


def verification(run: Run) -> list[Row]:
    """Embeddings/s of ``trainer.validate`` with the verification callback and of a bare ``model(x)`` loop."""
    sizes = run.sizes
    size = f"data.image_size=[{sizes.image_size},{sizes.image_size}]"
    model, datamodule = eval_throughput.build(
        run.scratch / "verification", sizes.eval_batch_size, *sizes.model, size, *sizes.eval_set
    )
    images = len(datamodule.val_sets[0].images)
    callback, bare = eval_throughput.best_seconds(
        model, datamodule, run.scratch / "validate", sizes.eval_repeats, run.device, run.precision
    )
    setting = (
        f"{images:,} images ({sizes.image_size}²), {len(datamodule.val_sets[0]):,} pairs, "
        f"batch {sizes.eval_batch_size}, {datamodule.loader_options['num_workers']} workers, {run.precision}, "
        f"best of {sizes.eval_repeats}"
    )
    return [Row("verification", _rate(images / callback), _rate(images / bare), f"{bare / callback:.3f}", setting)]


class BareSoftmax(torch.nn.Module):
    """The bare PyTorch baseline of the Partial FC rows: ``scale`` × cosine logits over all centres (normalised
    embeddings @ normalised centres, no margin) and cross-entropy. It has a facerec head's optimizer hooks, doing
    nothing, so that :func:`benchmarks.partial_fc.measure_head` steps it as it steps the heads."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0) -> None:
        super().__init__()
        self.centres = torch.nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)
        self.scale = scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        logits = F.linear(F.normalize(embeddings), F.normalize(self.centres))
        return SimpleNamespace(loss=F.cross_entropy(self.scale * logits, labels))

    def param_groups(self) -> list[dict]:
        """One group: the centres."""
        return [{"params": [self.centres]}]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Nothing: every centre is a plain parameter."""

    def after_optimizer_step(self) -> None:
        """Nothing: every centre is a plain parameter."""


def partial_fc_rows(run: Run) -> list[Row]:
    """Step ms and peak MiB of Partial FC r = 0.1 and of the full softmax head against the bare step."""
    sizes = run.sizes
    args = argparse.Namespace(
        device=run.device, embedding_size=sizes.embedding_size, batch_size=sizes.head_batch_size, warmup=2,
        steps=sizes.head_steps,
    )  # fmt: skip
    with torch.device(run.device):
        bare = BareSoftmax(sizes.classes, sizes.embedding_size)
    bare_ms, bare_mib = partial_fc.measure_head(bare, sizes.classes, args)
    del bare
    setting = f"{sizes.classes:,} classes, E={sizes.embedding_size}, B={sizes.head_batch_size}, fp32, SGD"
    rows = []
    for name, sample_rate in (("Partial FC r=0.1", 0.1), ("full softmax", None)):
        ms, mib = partial_fc.measure(sizes.classes, sample_rate, args)
        rows.append(Row(f"{name}, step", f"{ms:,.1f} ms", f"{bare_ms:,.1f} ms", f"{ms / bare_ms:.3f}", setting))
        memory = f"{mib / bare_mib:.3f}" if bare_mib else "–"
        rows.append(Row(f"{name}, peak memory", f"{mib:,.0f} MiB", f"{bare_mib:,.0f} MiB", memory, setting))
    return rows


def data_loading(run: Run) -> list[Row]:
    """Images/s of the ``.rec`` training loader per worker count against one process decoding the same JPEGs."""
    sizes = run.sizes
    spec = SyntheticSpec(
        num_identities=sizes.loader_identities, images_per_identity=sizes.loader_images_per_identity,
        heldout_identities=2, heldout_images_per_identity=2, folds=1, pairs_per_fold=1, image_size=sizes.image_size,
    )  # fmt: skip
    folder = generate(run.scratch / "faces", spec) / "train"
    folder_to_rec(folder, run.scratch / "rec")
    cfg = data_throughput.recipe_config(f"data.image_size=[{sizes.image_size},{sizes.image_size}]")
    decode = data_throughput.decoder_throughput(folder, repeats=2)[0]
    setting = (
        f"{len(list(folder.rglob('*.jpg'))):,} faces ({sizes.image_size}²), augment={cfg.data.augment}, "
        f"batch {sizes.loader_batch_size}"
    )
    rows, fed = [], None
    for workers in sizes.workers:
        rate = data_throughput.loader_throughput(
            run.scratch / "rec", "rec", workers, sizes.loader_batch_size, sizes.loader_batches, cfg
        )
        per_worker = rate / max(workers, 1) / decode
        name = f"`.rec` loader, num_workers={workers}"
        bare = "one process decoding (OpenCV)"
        rows.append(Row(name, _rate(rate), _rate(decode), f"{per_worker:.3f} per worker", f"{setting}; bare: {bare}"))
        if fed is None and run.step_images_per_s and rate >= run.step_images_per_s:
            fed = workers
    step = _rate(run.step_images_per_s) if run.step_images_per_s else "no training step measured"
    verdict = f"{fed} workers" if fed is not None else f"more than {sizes.workers[-1]} workers"
    rows.append(Row("workers that keep the training step fed", verdict, "", "", f"fastest training step above: {step}"))
    return rows


def start_pytest(scratch: Path) -> subprocess.Popen:
    """Starts ``pytest -m gpu`` from the repo root in a process group of its own, its output piped."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               f"--basetemp={scratch / 'pytest'}"]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    """Kills what is left of ``process``' process group and reaps it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def pytest_gpu(run: Run) -> list[Row]:
    """The summary line of ``pytest -m gpu`` in a child process: started now, or at the start of a run on the CPU
    (``run.pytest``), where it shares no device with the measurements. Its process group is killed after.

    Raises:
        RuntimeError: If pytest exits non-zero.
    """
    process = run.pytest or start_pytest(run.scratch)
    try:
        output, _ = process.communicate()
    finally:
        stop(process)
    print(output, end="")
    summary = [line.strip("= ") for line in output.splitlines() if line.strip()][-1:] or ["no output"]
    if process.returncode != 0:
        raise RuntimeError(f"exit {process.returncode}: {summary[0]}")
    return [Row("pytest -m gpu", summary[0], setting="tests marked gpu (skipped without CUDA)")]


SECTIONS: dict[str, Callable[[Run], list[Row]]] = {
    "pytest -m gpu": pytest_gpu,
    "training, eager": functools.partial(training, compiled=False),
    "training, torch.compile": functools.partial(training, compiled=True),
    "verification": verification,
    "Partial FC": partial_fc_rows,
    "data loading": data_loading,
}


def device_name(device: str) -> str:
    """The GPU's name, or the CPU model from ``/proc/cpuinfo``."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def markdown(rows: list[Row], run: Run, command: str, seconds: float) -> str:
    """The results section: heading, device and versions, the table."""
    cuda = f", CUDA {torch.version.cuda}" if torch.device(run.device).type == "cuda" else ""
    lines = [
        TITLE,
        "",
        f"{device_name(run.device)}; torch {torch.__version__}{cuda}, Python {platform.python_version()}; "
        f"{datetime.date.today().isoformat()}; `{command}`, {seconds:.0f} s in all.",
        "",
        *run.notes,
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join("---" for _ in HEADER) + " |",
        *("| " + " | ".join(row.cells()) + " |" for row in rows),
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replaces the :data:`TITLE` section of ``path`` (up to the next ``## `` heading) with ``section``, or
    appends it; creates the file when absent."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == TITLE]
    if not starts:
        text = "".join(lines).rstrip("\n")
        path.write_text(f"{text}\n\n{section}" if text else section)
        return
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "# "))), len(lines))
    after = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + section + (f"\n{after}" if after else ""))


def run_section(title: str, run: Run, start: float, failed: list[str]) -> list[Row]:
    """The rows of section ``title`` within its limit and the budget left since ``start``; on an error or timeout
    a FAILED row instead, and ``title`` added to ``failed``."""
    sizes = run.sizes
    left = sizes.budget_s - (time.monotonic() - start)
    print(f"[{time.monotonic() - start:5.1f} s] {title} (limit {min(sizes.limits[title], left):.0f} s)", flush=True)
    try:
        if left < 1:
            raise SectionTimeout(f"no time left of the {sizes.budget_s:.0f} s budget")
        with time_limit(min(sizes.limits[title], left)):
            rows = SECTIONS[title](run)
    except Exception as error:  # recorded in the table; the other sections still run
        traceback.print_exc()
        failed.append(title)
        rows = [Row(title, "FAILED", setting=f"{type(error).__name__}: {error}"[:300])]
    for row in rows:
        print("  " + " | ".join(row.cells()), flush=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Runs every section within the budget, prints and writes the table; 1 if any section failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="a dry run on tiny sizes (seconds on the CPU)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args(argv)
    start = time.monotonic()
    sizes = TINY if args.tiny else FULL
    rows: list[Row] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="facerec-gpu-benchmark-") as scratch:
        run = Run(args.device, sizes, Path(scratch))
        if args.tiny:
            torch.set_num_threads(1)  # tiny tensors: spinning intra-op threads only slow a shared CPU down
            run.notes += ["`--tiny`: a dry run on tiny sizes that checks the script works; not a benchmark.", ""]
        titles = list(SECTIONS)
        if torch.device(args.device).type == "cpu":  # no device to share: pytest runs beside the measurements
            run.pytest = start_pytest(run.scratch)
            titles.append(titles.pop(titles.index("pytest -m gpu")))
        try:
            for title in titles:
                rows += run_section(title, run, start, failed)
        finally:
            if run.pytest is not None:
                stop(run.pytest)
    command = "benchmarks/gpu.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    section = markdown(rows, run, command.strip(), time.monotonic() - start)
    write_section(args.results, section)
    print(f"\n{section}\nwritten to {args.results}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
