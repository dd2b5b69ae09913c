"""Pictures of embeddings: PCA projection and per-identity scatter plots, for any checkpoint.

``python -m facerec.viz CKPT DATA_ROOT [--heldout DIR] [--out embeddings.png] [--max-identities 10]``
embeds the images of the first identities of an identity folder (and optionally a held-out one)
and writes a scatter plot, one colour per identity. Embeddings with more than two dimensions are
projected onto their first two principal components.
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

from facerec.data.training_set import open_training_set
from facerec.data.transforms import Crop, eval_transform

Panel = tuple[str, np.ndarray, np.ndarray]


def pca(points: np.ndarray, dim: int = 2) -> np.ndarray:
    """Projects (N, E) points onto their first ``dim`` principal components → (N, dim)."""
    centred = points - points.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:dim].T


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


def plot_panels(panels: Sequence[Panel], path: str | Path, title: str) -> Path:
    """Writes side-by-side scatter plots, one colour per label; >2-d points are PCA-projected.

    Args:
        panels: ``(panel title, (N, E) points, (N,) labels)`` per panel.
        path: The PNG to write (parent folders are created).
        title: Figure title.
    """
    figure = Figure(figsize=(5 * len(panels), 5))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (name, points, labels) in zip(axes[0], panels, strict=True):
        projected = points if points.shape[1] == 2 else pca(points)
        scatter = axis.scatter(projected[:, 0], projected[:, 1], c=labels, cmap="tab10", s=8)
        axis.set_title(name if points.shape[1] == 2 else f"{name} (PCA of {points.shape[1]}-d)")
        axis.legend(*scatter.legend_elements(), title="identity", fontsize="small", loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    """The command line: plots a checkpoint's embeddings of an identity folder (and a held-out one)."""
    from facerec.module import FaceRecognitionModule

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
