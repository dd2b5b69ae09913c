"""Hydra callbacks: a summary table of a multirun sweep."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SUMMARY_NAME = "multirun_summary"


def best_monitored(job_dir: Path) -> float | None:
    """The best ``monitor`` value ``ModelCheckpoint`` recorded in the job's ``last.ckpt``, if any."""
    path = job_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    return None


def job_row(job_dir: Path) -> dict[str, Any]:
    """One job: its number, overrides, verification accuracy per set and best monitored value."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    metrics_file = job_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return {
        "job": int(job_dir.name),
        "overrides": " ".join(str(o) for o in overrides),
        "accuracy": {name: values.get("accuracy") for name, values in metrics.items()},
        "best_monitored": best_monitored(job_dir),
        "dir": str(job_dir),
    }


def markdown_table(rows: list[dict[str, Any]], monitor: str | None) -> str:
    """The rows as a Markdown table, one accuracy column per verification set."""
    sets = sorted({name for row in rows for name in row["accuracy"]})
    header = ["job", "overrides", *(f"{name} accuracy" for name in sets), f"best {monitor or 'monitor'}"]

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [str(row["job"]), row["overrides"], *(cell(row["accuracy"].get(s)) for s in sets)]
        lines.append("| " + " | ".join([*values, cell(row["best_monitored"])]) + " |")
    return "\n".join(lines)


class MultirunSummary(Callback):
    """At the end of a sweep, tabulates every job's verification accuracy.

    Reads each job directory's ``metrics.json`` (final model, per set) and the best ``monitor``
    value of its ``ModelCheckpoint``, prints a Markdown table and writes
    ``<sweep dir>/multirun_summary.json`` and ``.md``. Jobs that wrote nothing (failed) show "–".
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        job_dirs = sorted(
            (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
        )
        rows = [job_row(d) for d in job_dirs]
        monitor = config.get("monitor")
        table = markdown_table(rows, monitor)
        (sweep_dir / f"{SUMMARY_NAME}.json").write_text(json.dumps({"monitor": monitor, "jobs": rows}, indent=2))
        (sweep_dir / f"{SUMMARY_NAME}.md").write_text(table + "\n")
        print(f"\nSweep summary ({sweep_dir})\n{table}\n", flush=True)
        log.info("sweep summary written to %s", sweep_dir / f"{SUMMARY_NAME}.md")
