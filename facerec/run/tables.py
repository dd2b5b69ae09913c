"""Result tables: printed with rich (fitted to a terminal, uncut in log files and pipes) and written as JSON."""

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
"""The verification metrics shown by default."""
UNBOUNDED = 100_000
"""Width a table is measured at to find its natural (unwrapped) width."""


def print_table(table: Table) -> None:
    """Prints ``table`` to stdout between blank lines.

    In a terminal, rich fits the table to its width (text columns wrap first). Elsewhere (a log file,
    a pipe, captured output) rich would assume 80 columns and cut cells; there the table is printed
    at its natural width instead, one line per row.
    """
    console = Console()
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(UNBOUNDED)).maximum
        console = Console(width=max(console.width, natural))
    console.print()
    console.print(table)
    console.print()


def few_impostor_cells(impostor_pairs: Mapping[str, int], columns: Sequence[str]) -> dict[str, list[str]]:
    """``{set name: its tar@far=x columns}`` whose set has fewer than ``ceil(10 / x)`` impostor pairs."""
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
    """Metrics as a rich table, one row per set and one column per key (4 decimals, NaN where a metric is missing).

    A ``tar@far=x`` cell of a set with fewer than ``ceil(10 / x)`` impostor pairs (``impostor_pairs``) is
    marked ``*``, and the caption gives the counts: such a value rests on fewer than 10 false accepts.
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
    """One printed table of :func:`report`: its title, ``{set name: {key: value}}``, the keys shown as columns, and
    the impostor pairs of each set (``tar@far`` cells on too few are marked, :func:`format_table`)."""

    title: str
    results: dict[str, dict[str, float]]
    columns: Sequence[str] = TABLE_COLUMNS
    impostor_pairs: Mapping[str, int] | None = None


@rank_zero_only
def report(tables: Sequence[ResultTable], metrics_file: str | None) -> None:
    """Prints the tables and writes all their results as one JSON ``{set name: {key: value}}`` (rank zero only)."""
    for table in tables:
        if table.results:
            print_table(format_table(table.results, table.title, table.columns, table.impostor_pairs))
    if metrics_file:
        Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
        merged = {name: metrics for table in tables for name, metrics in table.results.items()}
        Path(metrics_file).write_text(json.dumps(merged, indent=2, sort_keys=True))
        log.info("metrics written to %s", metrics_file)
