"""Inference-ready embedding models: a checkpoint or an ONNX export behind one interface, and the batched loop.

:func:`load_model` turns a training checkpoint (``.ckpt``) or an ONNX export (``.onnx``, with the
``.json`` that ``eval.py export.onnx=…`` writes beside it) into an embedder: images (B, 3, H, W) in
[-1, 1] → raw embeddings (B, E), the image's plus its mirror image's when ``flip`` is on (the
evaluation protocol). :func:`embed_dataset` runs one over a dataset of ``(image, index)`` samples.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import onnxruntime.capi.onnxruntime_pybind11_state as onnxruntime_errors
import torch
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from facerec.data.transforms import Crop, check_crop, eval_transform
from facerec.data.verification.sets import VerificationImages
from facerec.errors import DataFileError
from facerec.eval.verification import l2_normalize
from facerec.models import embed_with_mirror
from facerec.module import FaceRecognitionModule

log = logging.getLogger(__name__)

SIDECAR_KEYS = ("input_size", "crop", "flip", "embedding_size", "threshold")
SIDECAR_EXAMPLE = '{"input_size": [112, 112], "crop": null, "flip": true}'
ONNX_ERRORS = (
    onnxruntime_errors.Fail,
    onnxruntime_errors.InvalidArgument,
    onnxruntime_errors.InvalidGraph,
    onnxruntime_errors.InvalidProtobuf,
    onnxruntime_errors.NoSuchFile,
    onnxruntime_errors.NotImplemented,
    onnxruntime_errors.RuntimeException,
)
"""What onnxruntime raises for a file it cannot load (none is a Python ``ValueError``)."""


class OnnxModelError(DataFileError):
    """An ONNX export or its sidecar JSON that cannot be used; the message names the file (and key)."""


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
        path: The ``.onnx`` file. Its sidecar (:func:`sidecar_path`, :func:`read_sidecar`) must be beside it:
            it supplies the input size, crop, flip setting and decision threshold that the graph lacks.
        flip: Overrides the sidecar's flip setting.
        providers: onnxruntime execution providers; default CUDA when available, then CPU.

    Raises:
        OnnxModelError: If the file is not a facerec ONNX export, or the sidecar is missing or malformed (naming
            the file, the key and what is expected).
    """

    def __init__(self, path: str | Path, flip: bool | None = None, providers: Sequence[str] | None = None) -> None:
        available = onnxruntime.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        session = onnx_session(path, providers)
        metadata = read_sidecar(path)
        _check_graph_agrees(path, session, metadata)
        super().__init__(
            nn.Identity(), metadata["input_size"], metadata["crop"], metadata["flip"] if flip is None else flip
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


def onnx_session(path: str | Path, providers: Sequence[str]) -> onnxruntime.InferenceSession:
    """An onnxruntime session of a facerec ONNX export (input ``images``, output ``embeddings``).

    Raises:
        OnnxModelError: Naming the file, for a zip archive or pickle (a PyTorch checkpoint?), a file onnxruntime
            cannot load, or a graph without facerec's input and output.
    """
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        kind = "a zip archive" if head.startswith(b"PK") else "a pickle"
        raise OnnxModelError(
            f"{path} is {kind} (a PyTorch checkpoint?), not an ONNX model: load a training checkpoint from a .ckpt "
            "file, or export one with eval.py ckpt_path=… export.onnx=…"
        )
    try:
        session = onnxruntime.InferenceSession(str(path), providers=list(providers))
    except ONNX_ERRORS as error:
        reason = str(error).split(" : ")[-1]
        raise OnnxModelError(f"{path} is not an ONNX model onnxruntime can load ({reason})") from None
    inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if inputs != ["images"] or "embeddings" not in outputs or len(session.get_inputs()[0].shape) != 4:
        raise OnnxModelError(
            f"{path} is not a facerec export: its graph has inputs {inputs} and outputs {outputs}, expected the one "
            "input 'images' (B, 3, H, W) and the output 'embeddings' of eval.py export.onnx=…"
        )
    return session


def _check_graph_agrees(path: str | Path, session: onnxruntime.InferenceSession, metadata: dict[str, Any]) -> None:
    """Refuses a sidecar whose input size or embedding size contradicts the graph's fixed dimensions."""
    graph_size = session.get_inputs()[0].shape[2:]
    if all(isinstance(side, int) for side in graph_size) and list(graph_size) != metadata["input_size"]:
        raise OnnxModelError(
            f"{sidecar_path(path)}: key 'input_size' is {metadata['input_size']} but the graph {path} takes "
            f"{list(graph_size)}: the sidecar belongs to another export"
        )
    width = session.get_outputs()[0].shape[-1]
    if isinstance(width, int) and metadata["embedding_size"] not in (None, width):
        raise OnnxModelError(
            f"{sidecar_path(path)}: key 'embedding_size' is {metadata['embedding_size']} but the graph {path} gives "
            f"{width}: the sidecar belongs to another export"
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _shown(value: Any) -> str:
    """``repr(value)``, cut to 80 characters (a sidecar value can be anything)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The sidecar JSON of an ONNX export, checked key by key.

    A JSON object with ``input_size`` (two positive integers, required), ``flip`` (``true``/``false``, required),
    ``crop`` (``null``, a centre fraction in (0, 1] or a box ``[top, left, height, width]``; default ``null``),
    ``embedding_size`` (a positive integer or ``null``) and ``threshold`` (``null`` or the decision rule of
    ``+threshold_at_far``: an object whose ``distance`` is a finite number). Unknown keys are kept, with a
    warning. A missing sidecar is an error, not a default: the graph does not say which crop and flip its
    embeddings need, nor the threshold they were validated with, so guessing would give other embeddings and
    decisions silently.

    Returns:
        The sidecar's keys, ``crop``, ``embedding_size`` and ``threshold`` filled with ``None`` when absent.

    Raises:
        OnnxModelError: If the sidecar is missing or not a file, is not valid JSON, or a key has a wrong value;
            the message names the file, the key and what is expected.
    """
    path = sidecar_path(onnx_path)
    if path.exists() and not path.is_file():
        raise OnnxModelError(f"{path} is not a file (a folder?): expected the sidecar JSON of {onnx_path}")
    if not path.exists():
        raise OnnxModelError(
            f"{onnx_path}: its sidecar {path} is missing: it holds the input size, face crop, flip setting and "
            "decision threshold the graph lacks. Copy it from where the model was exported, or write one with the "
            f"settings the model was trained with, e.g. {SIDECAR_EXAMPLE}"
        )
    try:
        sidecar = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:
        raise OnnxModelError(f"{path} is not valid JSON ({error}); re-export the model or fix the file") from None
    if not isinstance(sidecar, dict):
        raise OnnxModelError(f"{path}: expected a JSON object such as {SIDECAR_EXAMPLE}, got {type(sidecar).__name__}")
    sidecar = {"crop": None, "embedding_size": None, "threshold": None} | sidecar
    for key in ("input_size", "flip"):
        if key not in sidecar:
            raise OnnxModelError(f"{path}: key {key!r} is missing; expected an object such as {SIDECAR_EXAMPLE}")
    size = sidecar["input_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_positive_int(side) for side in size)):
        raise OnnxModelError(f"{path}: key 'input_size' is {_shown(size)}: expected two positive integers [H, W]")
    if not isinstance(sidecar["flip"], bool):
        raise OnnxModelError(
            f"{path}: key 'flip' is {_shown(sidecar['flip'])}: expected true or false (a JSON boolean)"
        )
    try:
        sidecar["crop"] = check_crop(sidecar["crop"])
    except (TypeError, ValueError) as error:
        raise OnnxModelError(
            f"{path}: key 'crop' is {_shown(sidecar['crop'])}: expected null, a centre fraction in (0, 1] or a box "
            f"[top, left, height, width] ({error})"
        ) from None
    if sidecar["embedding_size"] is not None and not _positive_int(sidecar["embedding_size"]):
        raise OnnxModelError(
            f"{path}: key 'embedding_size' is {_shown(sidecar['embedding_size'])}: expected a positive integer or null"
        )
    threshold = sidecar["threshold"]
    if threshold is not None and not (isinstance(threshold, dict) and _finite_number(threshold.get("distance"))):
        raise OnnxModelError(
            f"{path}: key 'threshold' is {_shown(threshold)}: expected null or an object whose 'distance' (squared L2 "
            "distance of L2-normalised embeddings) is a finite number"
        )
    unknown = sorted(set(sidecar) - set(SIDECAR_KEYS))
    if unknown:
        log.warning("%s: unknown keys %s are ignored (known: %s)", path, unknown, ", ".join(SIDECAR_KEYS))
    return sidecar


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
        OnnxModelError: For an ``.onnx`` that is not a facerec export, or whose sidecar is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix.lower() == ".onnx":
        return OnnxFaceEmbedder(path, flip=flip)
    if path.suffix.lower() != ".ckpt":
        raise ValueError(f"{path}: expected a training checkpoint (.ckpt) or an ONNX export (.onnx)")

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
