"""ONNX export of the embedding network, checked with onnxruntime against PyTorch."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import onnxruntime
import torch
from torch import nn

from facerec.eval.verification import l2_normalize
from facerec.inference import sidecar_path
from facerec.module import FaceRecognitionModule

TOLERANCE = 1e-4


def export_onnx(net: nn.Module, path: str | Path, input_size: tuple[int, int], opset: int = 17) -> Path:
    """Exports ``net`` (images (B, 3, H, W) → embeddings (B, E)) in eval mode with a dynamic batch axis.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``), which needs the ``onnx`` package only
    (the dynamo exporter would also need ``onnxscript``).

    Args:
        net: The embedding network (no flip TTA: one forward pass per image).
        path: ONNX file to write (parents created).
        input_size: (H, W) of the input images.
        opset: ONNX opset version.

    Returns:
        The path written. The graph's input is ``images`` and its output ``embeddings``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    example = torch.zeros(2, 3, *input_size, device=next(net.parameters()).device)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(
                net,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=["embeddings"],
                dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            )
    finally:
        net.train(was_training)
    return path


def check_onnx(path: str | Path, net: nn.Module, images: torch.Tensor, tolerance: float = TOLERANCE) -> float:
    """Runs the ONNX file with onnxruntime (CPU) and ``net`` in eval mode on ``images``.

    The embeddings are compared after L2 normalisation, as verification scores them: raw embedding
    norms reach the thousands, where one float32 rounding step alone exceeds an absolute 1e-4.

    Args:
        path: ONNX file written by :func:`export_onnx`.
        net: The PyTorch network it was exported from.
        images: (B, 3, H, W) float images; B need not be the export batch size.
        tolerance: Largest accepted absolute difference.

    Returns:
        The maximum absolute difference between the two L2-normalised embeddings.

    Raises:
        ValueError: If the difference is ``tolerance`` or more, or the output shapes differ.
    """
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(["embeddings"], {"images": images.detach().cpu().float().numpy()})[0]
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            expected = net(images.to(next(net.parameters()).device)).float().cpu().numpy()
    finally:
        net.train(was_training)
    if exported.shape != expected.shape:
        raise ValueError(f"ONNX model {path} returns shape {exported.shape}, PyTorch {expected.shape}")
    difference = float(np.max(np.abs(l2_normalize(exported) - l2_normalize(expected))))
    if not difference < tolerance:
        raise ValueError(
            f"ONNX model {path} differs from PyTorch by up to {difference:.3g} (L2-normalised embeddings) "
            f"on {len(images)} images; tolerance {tolerance:g}"
        )
    return difference


def export_checked_onnx(
    model: FaceRecognitionModule,
    datamodule: L.LightningDataModule,
    export: Mapping,
    flip: bool,
    crop: Any,
    threshold: dict | None,
) -> Path:
    """Exports ``model.net`` to ONNX, checks it against PyTorch and writes its sidecar JSON; returns the ONNX path."""
    images = (
        next(iter(datamodule.val_dataloader()[0]))[0]
        if datamodule.val_set_paths
        else torch.rand(4, 3, *model.hparams.input_size) * 2 - 1
    )
    onnx_path = export_onnx(model.net, export["onnx"], tuple(model.hparams.input_size), export["opset"])
    difference = check_onnx(onnx_path, model.net, images)
    print(
        f"ONNX export {onnx_path}: max abs difference to PyTorch {difference:.3g} "
        f"(L2-normalised embeddings, {len(images)} images)"
    )
    sidecar = {
        "input_size": list(model.hparams.input_size),
        "crop": crop,
        "flip": bool(flip),
        "embedding_size": int(model.hparams.embedding_size),
        "threshold": threshold,
    }
    sidecar_path(onnx_path).write_text(json.dumps(sidecar, indent=2))
    return onnx_path
