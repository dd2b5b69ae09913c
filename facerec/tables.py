"""Printing result tables with rich: fitted to a terminal, uncut in log files and pipes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

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
