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
    """Exports ``net`` in eval mode to ONNX: input ``images`` (B, 3, H, W), output ``embeddings`` (B, E), dynamic B.

    TorchScript exporter (``dynamo=False``: needs ``onnx`` only). ``input_size``: (H, W); parents of ``path``
    are created; no flip TTA. Returns ``path``.
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
    """Max abs difference of L2-normalised embeddings, onnxruntime (CPU) vs ``net`` (eval), on (B, 3, H, W) ``images``.

    Normalised because raw norms reach thousands, where float32 rounding alone exceeds 1e-4.

    Raises:
        ValueError: Shapes differ, or the difference is >= ``tolerance``.
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
    """Exports ``model.net`` to ONNX, checks it against PyTorch, writes the sidecar JSON; returns the path."""
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
