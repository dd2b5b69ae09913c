"""``benchmarks/gpu.sh --device cpu --tiny``: the GPU benchmark's dry run, so that the script does not rot until a
GPU runs it. It starts a process (slow)."""

from __future__ import annotations

import sys

import pytest

from benchmarks.gpu import TITLE
from tests.helpers import REPO, run_process

pytestmark = pytest.mark.slow

ROWS = [  # on the CPU pytest runs beside the measurements and is collected last
    "training step, eager",
    "training step, torch.compile (backend=eager on the CPU)",
    "verification",
    "Partial FC r=0.1, step",
    "Partial FC r=0.1, peak memory",
    "full softmax, step",
    "full softmax, peak memory",
    "`.rec` loader, num_workers=0",
    "`.rec` loader, num_workers=1",
    "`.rec` loader, num_workers=2",
    "workers that keep the training step fed",
    "pytest -m gpu",
]


def test_tiny_cpu_dry_run_replaces_its_section_with_every_row(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Benchmark results\n\n{TITLE}\n\nnot measured yet\n\n## Other benchmark\n\nkept\n")
    repo_results = (REPO / "benchmarks" / "RESULTS.md").read_bytes()
    command = ["bash", "benchmarks/gpu.sh", "--device", "cpu", "--tiny", "--results", str(results)]
    run_process(command, timeout=240, env={"PYTHON": sys.executable})
    text = results.read_text()
    assert text.startswith(f"# Benchmark results\n\n{TITLE}\n\nCPU: ") and text.endswith("## Other benchmark\n\nkept\n")
    assert "not measured yet" not in text and "FAILED" not in text
    table = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")]
    assert [cells[0].removeprefix("| ") for cells in table[2:]] == ROWS
    assert all(len(cells) == 5 for cells in table)
    assert "skipped" in table[-1][1]
    assert (REPO / "benchmarks" / "RESULTS.md").read_bytes() == repo_results
