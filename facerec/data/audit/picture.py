"""The audit's picture: one row of labelled thumbnails per worst case."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from matplotlib.figure import Figure

from facerec.data.decode import read_image

COLUMNS = 4
"""Thumbnails per row at most."""


class Case(NamedTuple):
    """One row: ``title`` (the kind and its score) and up to :data:`COLUMNS` ``(image path, caption)``."""

    title: str
    images: Sequence[tuple[Path, str]]


def plot_cases(cases: Sequence[Case], path: str | Path, title: str) -> Path:
    """Writes the cases as rows of thumbnails with captions to PNG ``path``; returns it.

    Raises:
        ValueError: No case.
    """
    if not cases:
        raise ValueError("no case to draw")
    figure = Figure(figsize=(1.9 * COLUMNS + 2.6, 2.1 * len(cases) + 0.6), layout="constrained")
    axes = figure.subplots(len(cases), COLUMNS, squeeze=False)
    for row, case in zip(axes, cases, strict=True):
        row[0].set_ylabel(case.title, rotation=0, ha="right", va="center", fontsize="small")
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
        for axis, (image, caption) in zip(row, case.images[:COLUMNS], strict=False):
            axis.imshow(read_image(image))
            axis.set_title(caption, fontsize="x-small")
    figure.suptitle(title)
    figure.savefig(path, dpi=80)
    return Path(path)
