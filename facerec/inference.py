"""Inference-ready embedding models: a checkpoint or an ONNX export behind one interface, and the batched loop.

:func:`load_model` turns a training checkpoint (``.ckpt``) or an ONNX export (``.onnx``, with the
``.json`` that ``eval.py export.onnx=…`` writes beside it) into an embedder: images (B, 3, H, W) in
[-1, 1] → raw embeddings (B, E), the image's plus its mirror image's when ``flip`` is on (the
evaluation protocol). :func:`embed_dataset` runs one over a dataset of ``(image, index)`` samples.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from facerec.data.transforms import Crop, eval_transform
from facerec.data.verification import VerificationImages
from facerec.eval.verification import l2_normalize


def embed_with_mirror(net: Callable[[Tensor], Tensor], images: Tensor, flip: bool) -> Tensor:
    """``net(images)``, plus ``net`` of the mirror images with ``flip`` (the evaluation protocol). (B, E)."""
    embeddings = net(images)
    if flip:
        embeddings = embeddings + net(images.flip(3))
    return embeddings


def sidecar_path(onnx_path: str | Path) -> Path:
    """The JSON beside an ONNX export that holds what the graph does not: input crop, flip, decision threshold."""
    return Path(onnx_path).with_suffix(".json")


class FaceEmbedder(nn.Module):
    """A trained embedding network ready for inference.

    Args:
        net: Images (B, 3, H, W) in [-1, 1] → embeddings (B, E).
        input_size: (H, W) the network was trained on.
        crop: The face crop its training images had before resizing (``data.crop``), or None.
        flip: Add the mirror image's embedding to the image's.
    """

    def __init__(self, net: nn.Module, input_size: Sequence[int], crop: Crop = None, flip: bool = True) -> None:
        super().__init__()
        self.net = net
        self.input_size = tuple(int(s) for s in input_size)
        self.crop = crop
        self.flip = flip
        self.eval()

    @property
    def transform(self) -> Callable[..., dict[str, Any]]:
        """The preprocessing of RGB uint8 images (albumentations style): crop, resize to ``input_size``, normalise."""
        return eval_transform(self.input_size, self.crop)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return next(self.net.parameters()).device

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images in [-1, 1] → (B, E) raw embeddings (image + mirror image with ``flip``)."""
        return embed_with_mirror(self.net, images, self.flip)

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """RGB uint8 (H, W, 3) images of any size → (N, E) L2-normalised float32 embeddings."""
        raw = embed_dataset(self, VerificationImages(images, self.transform), batch_size=batch_size)
        return l2_normalize(raw).astype(np.float32)


class OnnxFaceEmbedder(FaceEmbedder):
    """An ONNX export (``eval.py export.onnx=…``) run by onnxruntime, with :class:`FaceEmbedder`'s interface.

    Args:
        path: The ``.onnx`` file. Its sidecar (:func:`sidecar_path`), when present, supplies the crop and
            the flip setting; without one the input size comes from the graph, no crop, flip on.
        flip: Overrides the sidecar's flip setting.
        providers: onnxruntime execution providers; default CUDA when available, then CPU.
    """

    def __init__(self, path: str | Path, flip: bool | None = None, providers: Sequence[str] | None = None) -> None:
        available = onnxruntime.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        session = onnxruntime.InferenceSession(str(path), providers=list(providers))
        metadata = read_sidecar(path)
        input_size = metadata.get("input_size") or session.get_inputs()[0].shape[2:]
        if not all(isinstance(s, int) for s in input_size):
            raise ValueError(f"{path}: the graph's input has no fixed height and width, and {sidecar_path(path)} "
                             "is missing: re-export it with eval.py export.onnx=…")  # fmt: skip
        super().__init__(
            nn.Identity(), input_size, metadata.get("crop"), metadata.get("flip", True) if flip is None else flip
        )
        self.path = Path(path)
        self.session = session
        self.metadata = metadata

    @property
    def device(self) -> torch.device:
        """onnxruntime takes and returns host arrays."""
        return torch.device("cpu")

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images in [-1, 1] → (B, E) raw embeddings (image + mirror image with ``flip``)."""
        batch = images.detach().cpu().float().numpy()
        embeddings = self._run(batch)
        if self.flip:
            embeddings = embeddings + self._run(np.ascontiguousarray(batch[..., ::-1]))
        return torch.from_numpy(embeddings)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["embeddings"], {"images": batch})[0]


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The sidecar JSON of an ONNX export ({} when there is none)."""
    path = sidecar_path(onnx_path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it or re-export the model") from error


def load_model(path: str | Path, flip: bool | None = None, device: str | torch.device | None = None) -> FaceEmbedder:
    """An inference-ready embedder from a training checkpoint (``.ckpt``) or an ONNX export (``.onnx``).

    Args:
        path: The checkpoint or ONNX file.
        flip: Add the mirror image's embedding; default the checkpoint's ``flip_test`` (the ONNX sidecar's).
        device: Where a checkpoint's network runs; default CUDA when available, else the CPU.

    Returns:
        A :class:`FaceEmbedder` in eval mode (an :class:`OnnxFaceEmbedder` for ``.onnx``).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it is neither a checkpoint nor an ONNX file; a
            :class:`~facerec.models.checkpoint.CheckpointError` if the checkpoint is not one facerec loads
            (e.g. its hyper-parameters name anything but facerec's own parts).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix.lower() == ".onnx":
        return OnnxFaceEmbedder(path, flip=flip)
    if path.suffix.lower() != ".ckpt":
        raise ValueError(f"{path}: expected a training checkpoint (.ckpt) or an ONNX export (.onnx)")
    from facerec.module import FaceRecognitionModule  # not at the top: facerec.module imports this module

    module = FaceRecognitionModule.load_from_checkpoint(path, map_location="cpu")  # checks the file first
    hparams = module.hparams
    embedder = FaceEmbedder(
        module.net, hparams.input_size, hparams.get("input_crop"), hparams.flip_test if flip is None else flip
    )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return embedder.to(device)


def embed_dataset(
    embedder: Callable[[Tensor], Tensor],
    dataset: Dataset,
    batch_size: int = 64,
    num_workers: int = 0,
    description: str | None = None,
) -> np.ndarray:
    """Embeds every sample of a dataset of ``(image tensor, index)`` in batches, under ``torch.inference_mode``.

    Args:
        embedder: (B, 3, H, W) → (B, E), e.g. a :class:`FaceEmbedder`; batches go to its ``device`` if it has one.
        dataset: Samples ``(image, i)``, ``i`` in ``[0, len(dataset))``.
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes.
        description: If given, a progress bar with this label is shown (and removed when done).

    Returns:
        (N, E) raw embeddings, row ``i`` = sample ``i``'s.
    """
    device = getattr(embedder, "device", torch.device("cpu"))
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=torch.device(device).type == "cuda"
    )
    out, filled = None, np.zeros(len(dataset), dtype=bool)
    with torch.inference_mode(), Progress(transient=True, disable=description is None) as progress:
        task = progress.add_task(description or "", total=len(dataset))
        for images, index in loader:
            embeddings = embedder(images.to(device, non_blocking=True)).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(dataset), embeddings.shape[1]), dtype=np.float32)
            out[index.numpy()] = embeddings
            filled[index.numpy()] = True
            progress.advance(task, len(index))
    if out is None or not filled.all():
        raise RuntimeError(f"embedded {int(filled.sum())} of {len(dataset)} images: the dataset skipped indices")
    return out
