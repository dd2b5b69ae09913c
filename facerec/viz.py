"""Pictures of embeddings: PCA projection and per-identity scatter plots, for any checkpoint.

``python -m facerec.viz CKPT DATA_ROOT [--heldout DIR] [--out embeddings.png] [--max-identities 10]``
embeds the images of the first identities of an identity folder (and optionally a held-out one)
and writes a scatter plot, one colour per identity. Embeddings with more than two dimensions are
L2-normalised (verification compares their directions) and projected onto the first two principal
components of the unit vectors; every panel's axes keep to robust limits, so a few outliers cannot
squash the clusters into a line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Subset

from facerec.data.training.training_set import open_training_set
from facerec.data.transforms import Crop, eval_transform

Panel = tuple[str, np.ndarray, np.ndarray]


def pca(points: np.ndarray, dim: int = 2) -> np.ndarray:
    """Projects (N, E) points onto their first ``dim`` principal components → (N, dim)."""
    centred = points - points.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:dim].T


def project_embeddings(embeddings: np.ndarray, dim: int = 2) -> np.ndarray:
    """L2-normalises (N, E) embeddings and projects them onto their first ``dim`` principal components → (N, dim).

    Verification compares embeddings by the cosine of their angle, so the picture shows what it compares:
    their directions. The PCA is fit on the unit vectors, where a few embeddings of large norm weigh no
    more than any other (on the raw embeddings they take the principal axes and squash the rest into a
    line). Zero vectors (which have no direction) enter the PCA as zeros.
    """
    points = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(points, axis=1, keepdims=True)
    return pca(points / np.maximum(norms, np.finfo(np.float64).tiny), dim)


def robust_limits(points: np.ndarray, fence: float = 3.0, percentile: float = 1.0, margin: float = 0.05) -> np.ndarray:
    """Axis limits for (N, D) points that a few outliers cannot stretch → (D, 2) rows of ``[low, high]``.

    Per coordinate, the limits span the points inside Tukey's far-out fences (the quartiles widened by
    ``fence`` interquartile ranges), and at least the ``percentile``-th to ``(100 - percentile)``-th
    percentiles, so at least 98 % of the points (by default) lie within them in each coordinate; outliers
    beyond the fences stretch nothing while they are under ``percentile`` % of the points on their side. The span
    is padded by ``margin`` of itself on each side (by 1 where it is empty). Points outside are not
    dropped here; :func:`feature_figure` draws them clipped to the edge of the axes. Non-finite values are
    ignored; a coordinate without any gets ``[-1, 1]``.
    """
    limits = []
    for values in np.asarray(points, dtype=np.float64).T:
        values = values[np.isfinite(values)]
        if values.size == 0:
            limits.append((-1.0, 1.0))
            continue
        q1, q3, low, high = np.percentile(values, [25.0, 75.0, percentile, 100.0 - percentile])
        inside = values[(values >= q1 - fence * (q3 - q1)) & (values <= q3 + fence * (q3 - q1))]
        low, high = min(low, inside.min()), max(high, inside.max())
        pad = margin * (high - low) if high > low else 1.0
        limits.append((low - pad, high + pad))
    return np.array(limits)


@torch.no_grad()
def embed_identity_folder(
    net: nn.Module,
    root: str | Path,
    image_size: Sequence[int],
    format: str = "folder",
    max_identities: int = 10,
    batch_size: int = 256,
    crop: Crop = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeds every image of the first ``max_identities`` identities of a training-set layout.

    Args:
        net: Images (B, 3, H, W) in [-1, 1] → (B, E) features (e.g. ``module.net``).
        root: Identity folder (``format=folder``) or folder with ``train.rec`` (``format=rec``).
        image_size: (H, W) the network expects.
        format: ``folder`` or ``rec``.
        max_identities: Identities (labels ``0 .. max_identities-1``) to embed.
        batch_size: Images per forward pass.
        crop: ``data.crop`` the network was trained with, applied before resizing.

    Returns:
        (N, E) float32 features and (N,) int labels.
    """
    dataset = open_training_set(root, format, eval_transform(tuple(image_size), crop))
    keep = [i for i, label in enumerate(dataset.labels) if label < max_identities]
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    features, labels = [], []
    for images, batch_labels in DataLoader(Subset(dataset, keep), batch_size):
        features.append(net(images.to(device)).float().cpu())
        labels.append(batch_labels)
    net.train(was_training)
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def feature_figure(panels: Sequence[Panel], title: str) -> Figure:
    """Side-by-side scatter plots, one colour per label, each within :func:`robust_limits`.

    2-d points are drawn as they are (Wen et al.'s pictures); larger embeddings by
    :func:`project_embeddings` (PCA of the L2-normalised embeddings). Points beyond the limits are drawn
    on the edge of the axes, crossed out, and counted in the panel title.

    Args:
        panels: ``(panel title, (N, E) points, (N,) labels)`` per panel.
        title: Figure title.
    """
    figure = Figure(figsize=(5 * len(panels), 5.4))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (name, points, labels) in zip(axes[0], panels, strict=True):
        projected = points if points.shape[1] == 2 else project_embeddings(points)
        limits = robust_limits(projected)
        shown = np.clip(projected, limits[:, 0], limits[:, 1])
        outside = (shown != projected).any(axis=1)
        scatter = axis.scatter(shown[:, 0], shown[:, 1], c=labels, cmap="tab10", s=8, clip_on=False)
        heading = name
        if points.shape[1] != 2:
            heading = f"{name}: PCA of L2-normalised {points.shape[1]}-d embeddings"
            axis.set_xlabel("PC 1")
            axis.set_ylabel("PC 2")
        if outside.any():
            axis.scatter(*shown[outside].T, marker="x", c="black", s=24, linewidths=0.8, clip_on=False)
            heading += f"\n{outside.sum()} beyond the axes, drawn on the edge (×)"
        axis.set_xlim(*limits[0])
        axis.set_ylim(*limits[1])
        axis.set_title(heading, fontsize="medium")
        axis.legend(*scatter.legend_elements(), title="identity", fontsize="small", loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_panels(panels: Sequence[Panel], path: str | Path, title: str) -> Path:
    """Writes :func:`feature_figure` of the panels to the PNG ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    feature_figure(panels, title).savefig(path, dpi=100)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    """The command line: plots a checkpoint's embeddings of an identity folder (and a held-out one)."""
    from facerec.module.face_module import FaceRecognitionModule

    parser = argparse.ArgumentParser(prog="python -m facerec.viz", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_path", help="a facerec checkpoint (.ckpt)")
    parser.add_argument("root", help="identity folder (or folder with train.rec with --format rec)")
    parser.add_argument("--format", default="folder", choices=["folder", "rec"])
    parser.add_argument("--heldout", help="a second identity folder, plotted beside the first")
    parser.add_argument("--out", default="embeddings.png", help="PNG to write")
    parser.add_argument("--max-identities", type=int, default=10)
    args = parser.parse_args(argv)
    model = FaceRecognitionModule.load_from_checkpoint(args.ckpt_path, map_location="cpu")
    size, crop = model.hparams.input_size, model.hparams.get("input_crop")
    embed = partial(embed_identity_folder, model.net, image_size=size, max_identities=args.max_identities, crop=crop)
    panels = [("training", *embed(args.root, format=args.format))]
    if args.heldout:
        panels.append(("held-out", *embed(args.heldout, format="folder")))
    path = plot_panels(panels, args.out, Path(args.ckpt_path).name)
    print(path)
    return path


if __name__ == "__main__":
    main()
