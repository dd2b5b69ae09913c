"""ROC plots of verification sets: arrays in, matplotlib figure or PNG out (no pyplot)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from facerec.eval.verification import area_under_curve, equal_error_rate


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "ROC") -> Figure:
    """TAR vs log-scaled FAR of one or more ROC curves, on an Agg canvas (no display needed).

    Args:
        curves: ``{label: (far, tar)}`` from :func:`facerec.eval.verification.roc_curve`; the legend adds AUC and EER.
        title: Figure title.

    Raises:
        ValueError: ``curves`` is empty or a curve's arrays differ in shape.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    figure = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    arrays = {label: _checked(label, far, tar) for label, (far, tar) in curves.items()}
    positive_fars = [far[far > 0] for far, _ in arrays.values()]
    left = min([1e-4, *(float(far.min()) for far in positive_fars if far.size)])
    for label, (far, tar) in arrays.items():
        auc, eer = area_under_curve(far, tar), equal_error_rate(far, tar)
        # FAR = 0 cannot sit on a log axis: drawn at the left edge.
        axes.step(np.clip(far, left, 1.0), tar, where="post", label=f"{label} (AUC {auc:.4f}, EER {eer:.4f})")
    axes.set_xscale("log")
    axes.set_xlim(left, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.subplots_adjust(left=0.13, right=0.96, bottom=0.12, top=0.92)  # fixed: tight_layout costs ~0.1 s
    return figure


def _checked(label: str, far: np.ndarray, tar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    far, tar = np.asarray(far, dtype=np.float64), np.asarray(tar, dtype=np.float64)
    if far.shape != tar.shape:
        raise ValueError(f"curve {label!r}: {far.shape} FAR values for {tar.shape} TAR values")
    return far, tar


def save_roc(path: str | Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "ROC") -> Path:
    """Writes :func:`plot_roc` as a PNG to ``path`` (overwrites, creates parents); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_roc(curves, title).savefig(path, format="png")
    return path
