"""Hydra callbacks: a clear error for an uncreatable run directory, a summary table of a multirun sweep."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from facerec.run.tables import print_table

log = logging.getLogger(__name__)

SUMMARY_NAME = "multirun_summary"


def _create(directory: str, kind: str, option: str) -> None:
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(
            f"error: cannot create the {kind} directory {directory} ({error.strerror or error}): a folder above it "
            f"must be writable; choose another with {option}=DIR"
        ) from None


class RunDirCheck(Callback):
    """Creates the run/sweep directory first; if it cannot, exits (status 1) naming the path and option."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _create(str(config.hydra.run.dir), "run", "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _create(str(config.hydra.sweep.dir), "sweep", "hydra.sweep.dir")


def callback_states(job_dir: Path) -> dict[str, Any]:
    """Callback states in the job's ``last.ckpt`` ({} without one)."""
    path = job_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        return {}
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("callbacks", {})


def best_monitored(states: dict[str, Any]) -> float | None:
    """Best ``monitor`` value a ``ModelCheckpoint`` recorded, or None."""
    for key, state in states.items():
        if key.startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    return None


def best_accuracy(states: dict[str, Any]) -> dict[str, float]:
    """Best verification accuracy per set the ``VerificationCallback`` recorded."""
    for key, state in states.items():
        if key.startswith("VerificationCallback"):
            return {name: float(value) for name, value in state.get("best_accuracy", {}).items()}
    return {}


def job_row(job_dir: Path) -> dict[str, Any]:
    """One job: number, overrides, final and best accuracy per set, best monitored value, dir."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    metrics_file = job_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    states = callback_states(job_dir)
    return {
        "job": int(job_dir.name),
        "overrides": " ".join(str(o) for o in overrides),
        "accuracy": {name: values.get("accuracy") for name, values in metrics.items()},
        "best_accuracy": best_accuracy(states),
        "best_monitored": best_monitored(states),
        "dir": str(job_dir),
    }


def summary_cells(rows: list[dict[str, Any]], monitor: str | None) -> tuple[list[str], list[list[str]]]:
    """Header and cells: final and best accuracy per set, best monitor ("–": none)."""
    sets = sorted({name for row in rows for name in row["accuracy"]})
    set_columns = [column for name in sets for column in (f"{name} accuracy", f"{name} best accuracy")]
    header = ["job", "overrides", *set_columns, f"best {monitor or 'monitor'}"]

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    cells = []
    for row in rows:
        accuracies = [cell(row[key].get(name)) for name in sets for key in ("accuracy", "best_accuracy")]
        cells.append([str(row["job"]), row["overrides"], *accuracies, cell(row["best_monitored"])])
    return header, cells


def markdown_table(rows: list[dict[str, Any]], monitor: str | None) -> str:
    """The rows as a Markdown table (``multirun_summary.md``)."""
    header, cells = summary_cells(rows, monitor)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(values) + " |" for values in cells]
    return "\n".join(lines)


def summary_table(rows: list[dict[str, Any]], monitor: str | None, title: str | None = None) -> Table:
    """The rows as a rich table (printed), with the columns of :func:`markdown_table`."""
    header, cells = summary_cells(rows, monitor)
    table = Table(title=title, title_justify="left")
    table.add_column(header[0], justify="right", no_wrap=True)
    table.add_column(header[1], overflow="fold")
    for column in header[2:]:
        table.add_column(column, justify="right")
    for values in cells:
        table.add_row(*values)
    return table


class MultirunSummary(Callback):
    """At sweep end, tabulates each job's ``metrics.json`` accuracies and the best accuracy and ``monitor`` from
    its ``last.ckpt``; prints it and writes ``<sweep dir>/multirun_summary.{json,md}``; failed jobs show "–".
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        job_dirs = sorted(
            (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
        )
        rows = [job_row(d) for d in job_dirs]
        monitor = config.get("monitor")
        (sweep_dir / f"{SUMMARY_NAME}.json").write_text(json.dumps({"monitor": monitor, "jobs": rows}, indent=2))
        (sweep_dir / f"{SUMMARY_NAME}.md").write_text(markdown_table(rows, monitor) + "\n")
        print_table(summary_table(rows, monitor, f"Sweep summary ({sweep_dir})"))
        log.info("sweep summary written to %s", sweep_dir / f"{SUMMARY_NAME}.md")
