"""Result tables: printed with rich (fitted to a terminal, uncut in logs and pipes) and written as JSON."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table

from facerec.eval.verification import FAR_TARGETS, needed_impostors

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("accuracy", "accuracy_std", "best_threshold", "auc", "eer", "tar@far=1e-3", "tar@far=1e-4")
"""Verification metrics shown by default."""
UNBOUNDED = 100_000
"""Width a table is measured at to find its natural width."""


def print_table(table: Table) -> None:
    """Prints ``table`` between blank lines: fitted to a terminal, else at its natural width (not cut at 80)."""
    console = Console()
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(UNBOUNDED)).maximum
        console = Console(width=max(console.width, natural))
    console.print()
    console.print(table)
    console.print()


def few_impostor_cells(impostor_pairs: Mapping[str, int], columns: Sequence[str]) -> dict[str, list[str]]:
    """``{set: its tar@far=x columns}`` for sets with fewer than ``ceil(10 / x)`` impostor pairs."""
    targets = {key: FAR_TARGETS[key] for key in columns if key in FAR_TARGETS}
    flagged = {
        name: [key for key, far in targets.items() if count < needed_impostors(far)]
        for name, count in impostor_pairs.items()
    }
    return {name: keys for name, keys in flagged.items() if keys}


def format_table(
    results: dict[str, dict[str, float]],
    title: str | None = None,
    columns: Sequence[str] = TABLE_COLUMNS,
    impostor_pairs: Mapping[str, int] | None = None,
) -> Table:
    """Rich table, a row per set, a column per key (4 decimals, NaN if missing).

    ``tar@far=x`` cells on fewer than ``ceil(10 / x)`` impostor pairs are marked ``*``, with counts in the caption.
    """
    flagged = few_impostor_cells(impostor_pairs or {}, columns)
    notes = [
        f"{name} has {impostor_pairs[name]} impostor pairs ("
        + ", ".join(f"{key} needs {needed_impostors(FAR_TARGETS[key])}" for key in keys)
        + ")"
        for name, keys in flagged.items()
        if name in results
    ]
    caption = f"* rough: fewer impostor pairs than 10/FAR; {'; '.join(notes)}" if notes else None
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    table.add_column("set")
    for key in columns:
        table.add_column(key, justify="right", no_wrap=True, min_width=len(key))
    for name, metrics in results.items():
        marked = flagged.get(name, ())
        table.add_row(name, *(f"{metrics.get(key, math.nan):.4f}{'*' if key in marked else ''}" for key in columns))
    return table


class ResultTable(NamedTuple):
    """One table of :func:`report`: title, ``{set: {key: value}}``, columns, impostor pairs per set."""

    title: str
    results: dict[str, dict[str, float]]
    columns: Sequence[str] = TABLE_COLUMNS
    impostor_pairs: Mapping[str, int] | None = None


@rank_zero_only
def report(tables: Sequence[ResultTable], metrics_file: str | None) -> None:
    """On rank zero: prints the tables, writes all results as one JSON ``{set: {key: value}}`` to ``metrics_file``."""
    for table in tables:
        if table.results:
            print_table(format_table(table.results, table.title, table.columns, table.impostor_pairs))
    if metrics_file:
        Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
        merged = {name: metrics for table in tables for name, metrics in table.results.items()}
        Path(metrics_file).write_text(json.dumps(merged, indent=2, sort_keys=True))
        log.info("metrics written to %s", metrics_file)
