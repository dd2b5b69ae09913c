"""Pictures of embeddings: PCA projection and per-identity scatter plots, for any checkpoint."""

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
    """(N, E) points -> (N, dim) on their first ``dim`` principal components."""
    centred = points - points.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:dim].T


def project_embeddings(embeddings: np.ndarray, dim: int = 2) -> np.ndarray:
    """(N, E) -> (N, dim) PCA of the L2-normalised embeddings (large norms can't take the axes; zeros stay 0)."""
    points = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(points, axis=1, keepdims=True)
    return pca(points / np.maximum(norms, np.finfo(np.float64).tiny), dim)


def robust_limits(points: np.ndarray, fence: float = 3.0, percentile: float = 1.0, margin: float = 0.05) -> np.ndarray:
    """(D, 2) ``[low, high]`` axis limits for (N, D) points that few outliers cannot stretch.

    Per coordinate: the points within Tukey's fences (quartiles ± ``fence`` IQR), widened to at least the
    ``percentile``..``100 - percentile`` percentiles, padded by ``margin`` (1 if empty span). Non-finite
    values are ignored; a coordinate without finite values gets [-1, 1].
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
    """(N, E) float32 features and (N,) labels of the first ``max_identities`` identities of a training set.

    Args:
        net: (B, 3, H, W) in [-1, 1] -> (B, E), e.g. ``module.net``.
        root: Identity folder (``format=folder``) or folder with ``train.rec`` (``format=rec``).
        image_size: Network input (H, W).
        format: ``folder`` or ``rec``.
        max_identities: Labels 0 .. max_identities-1 are embedded.
        batch_size: Images per forward pass.
        crop: Training ``data.crop``.
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
    """Side-by-side scatter plots of ``(title, (N, E) points, (N,) labels)`` panels, one colour per label.

    2-d points as they are; larger by :func:`project_embeddings`. Axes within :func:`robust_limits`; points
    beyond are drawn crossed on the edge and counted in the panel title.
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
    """Writes :func:`feature_figure` to PNG ``path`` (parents created); returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    feature_figure(panels, title).savefig(path, dpi=100)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m facerec.viz CKPT ROOT [--format rec] [--heldout DIR] [--out embeddings.png] [--max-identities 10]``.

    Plots the checkpoint's embeddings of the first identities of an identity folder (and of a held-out one
    beside it), one colour per identity; returns the PNG path.
    """
    from facerec.module.face_module import FaceRecognitionModule

    parser = argparse.ArgumentParser(prog="python -m facerec.viz", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_path", help="a facerec checkpoint (.ckpt)")
    parser.add_argument("root", help="identity folder (or folder with train.rec with --format rec)")
    parser.add_argument("--format", default="folder", choices=["folder", "rec"])
    parser.add_argument("--heldout", help="a second identity folder, plotted beside the first")
    parser.add_argument("--out", default="embeddings.png", help="PNG to write")
    parser.add_argument("--max-identities", type=int, default=10)
    args = parser.parse_args(argv)
    model = FaceRecognitionModule.load_embedding_net(args.ckpt_path)
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
