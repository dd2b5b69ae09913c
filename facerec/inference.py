"""Inference: a checkpoint or ONNX export behind one embedder interface (:func:`load_model`), and the batched
loop (:func:`embed_dataset`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime
import onnxruntime.capi.onnxruntime_pybind11_state as onnxruntime_errors
import torch
from rich.progress import Progress
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from facerec.data.detection.choice import DEFAULT_MIN_SCORE, FaceChoice
from facerec.data.detection.mtcnn import FaceDetector
from facerec.data.detection.photos import align_photos
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
"""What onnxruntime raises for a file it cannot load (none is a ``ValueError``)."""


class OnnxModelError(DataFileError):
    """An unusable ONNX export or sidecar JSON; the message names the file (and key)."""


def sidecar_path(onnx_path: str | Path) -> Path:
    """``<export>.json`` beside an ONNX export: input size, crop, flip, threshold (what the graph lacks)."""
    return Path(onnx_path).with_suffix(".json")


class PhotoEmbeddings(NamedTuple):
    """Embeddings of raw photos (:meth:`FaceEmbedder.embed_photos`).

    Attributes:
        embeddings: (N, E) float32 L2-normalised, one row per photo; NaN where no face was kept.
        choices: Per photo, what detection found and which face was kept (:class:`FaceChoice`).
    """

    embeddings: np.ndarray
    choices: list[FaceChoice]

    @property
    def found(self) -> np.ndarray:
        """(N,) bool: a face was kept (its row is an embedding)."""
        return np.array([choice.index is not None for choice in self.choices], dtype=bool)


class FaceEmbedder(nn.Module):
    """A trained embedding network ready for inference (eval mode).

    Args:
        net: (B, 3, H, W) in [-1, 1] -> (B, E).
        input_size: Training (H, W).
        crop: Training ``data.crop``, or None.
        flip: Add the mirror image's embedding.
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
        """Preprocessing of RGB uint8 images (albumentations style): crop, resize, normalise."""
        return eval_transform(self.input_size, self.crop)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return next(self.net.parameters()).device

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, E) raw embeddings (+ mirror's with ``flip``)."""
        return embed_with_mirror(self.net, images, self.flip)

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """RGB uint8 (H, W, 3) images of any size -> (N, E) L2-normalised float32."""
        raw = embed_dataset(self, VerificationImages(images, self.transform), batch_size=batch_size)
        return l2_normalize(raw).astype(np.float32)

    def embed_photos(
        self,
        images: Sequence[np.ndarray],
        detector: FaceDetector | None = None,
        min_score: float = DEFAULT_MIN_SCORE,
        batch_size: int = 64,
    ) -> PhotoEmbeddings:
        """Raw RGB uint8 (H, W, 3) photos -> detect, keep one face, align (ArcFace 112x112), embed.

        The face kept is the largest x most central one scoring at least ``min_score``
        (:mod:`facerec.data.detection.choice`); the crop then goes through :attr:`transform` as at evaluation.

        Args:
            images: The photos, any sizes.
            detector: Default a new MTCNN :class:`FaceDetector` on :attr:`device` (pass one to reuse it).
            min_score: Minimum score of a kept face.
            batch_size: Photos per detector and embedding pass.

        Returns:
            :class:`PhotoEmbeddings`: NaN rows for photos without a kept face (``found`` is False there), so a
            distance to them is never below a threshold.
        """
        detector = detector or FaceDetector().to(self.device)
        photos = align_photos(images, detector, min_score=min_score, batch_size=batch_size)
        crops = [photo.crop for photo in photos if photo.crop is not None]
        kept = self.embed_images(crops, batch_size) if crops else None
        width = self._embedding_size() if kept is None else kept.shape[1]
        embeddings = np.full((len(photos), width), np.nan, dtype=np.float32)
        if kept is not None:
            embeddings[[photo.crop is not None for photo in photos]] = kept
        return PhotoEmbeddings(embeddings, [photo.choice for photo in photos])

    def _embedding_size(self) -> int:
        """E, from one forward pass of a blank input."""
        blank = torch.zeros(1, 3, *self.input_size, device=self.device)
        with torch.inference_mode():
            return int(self(blank).shape[1])


class OnnxFaceEmbedder(FaceEmbedder):
    """An ONNX export run by onnxruntime, as a :class:`FaceEmbedder`.

    Args:
        path: The ``.onnx``; its sidecar (:func:`read_sidecar`) must be beside it.
        flip: Overrides the sidecar's.
        providers: onnxruntime providers; default CUDA if available, then CPU.

    Raises:
        OnnxModelError: Not a facerec export, or sidecar missing, malformed or contradicting the graph.
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
        """CPU: onnxruntime takes and returns host arrays."""
        return torch.device("cpu")

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, E) raw embeddings (+ mirror's with ``flip``)."""
        batch = images.detach().cpu().float().numpy()
        embeddings = self._run(batch)
        if self.flip:
            embeddings = embeddings + self._run(np.ascontiguousarray(batch[..., ::-1]))
        return torch.from_numpy(embeddings)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["embeddings"], {"images": batch})[0]


def onnx_session(path: str | Path, providers: Sequence[str]) -> onnxruntime.InferenceSession:
    """onnxruntime session of a facerec export (input ``images`` (B, 3, H, W), output ``embeddings``).

    Raises OnnxModelError for a zip/pickle (a checkpoint?), an unloadable file, or other inputs/outputs.
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
    """Refuses a sidecar whose input or embedding size contradicts the graph's fixed dimensions."""
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
    """``repr(value)`` cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The checked sidecar JSON of an ONNX export; ``crop``, ``embedding_size``, ``threshold`` default to None.

    Keys: ``input_size`` (two positive ints, required), ``flip`` (bool, required), ``crop`` (null, fraction in
    (0, 1] or ``[top, left, height, width]``), ``embedding_size`` (positive int or null), ``threshold`` (null or
    an object with a finite ``distance``). Unknown keys are kept with a warning. No defaults for a missing
    sidecar: crop, flip and threshold cannot be guessed.

    Raises:
        OnnxModelError: Missing, not a file, invalid JSON, or a bad key (names file, key, expectation).
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
    """An inference-ready embedder from a training checkpoint (``.ckpt``) or an ONNX export (``.onnx`` + sidecar
    ``.json`` from ``eval.py export.onnx=…``).

    The embedder maps (B, 3, H, W) in [-1, 1] to raw (B, E) embeddings, plus the mirror image's with ``flip``
    (the evaluation protocol); ``.transform`` prepares RGB uint8 images.

    Args:
        path: The checkpoint or ONNX file.
        flip: Default: the checkpoint's ``flip_test`` (the sidecar's ``flip``).
        device: Where a checkpoint's network runs; default CUDA if available, else CPU.

    Returns:
        A :class:`FaceEmbedder` in eval mode (:class:`OnnxFaceEmbedder` for ``.onnx``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Neither ``.ckpt`` nor ``.onnx``; :class:`~facerec.errors.CheckpointError` for a checkpoint
            facerec does not load (e.g. hyper-parameters naming foreign parts).
        OnnxModelError: Not a facerec export, or a missing or malformed sidecar.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix.lower() == ".onnx":
        return OnnxFaceEmbedder(path, flip=flip)
    if path.suffix.lower() != ".ckpt":
        raise ValueError(f"{path}: expected a training checkpoint (.ckpt) or an ONNX export (.onnx)")

    module = FaceRecognitionModule.load_embedding_net(path)  # checks the file first; never loads class centres
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
    """Embeds a dataset of ``(image, i)`` samples in batches under ``inference_mode``.

    Args:
        embedder: (B, 3, H, W) -> (B, E); batches go to its ``device`` if it has one.
        dataset: ``i`` in [0, len(dataset)).
        batch_size: Images per forward pass.
        num_workers: DataLoader workers.
        description: Label of a transient progress bar; None: no bar.

    Returns:
        (N, E) float32 raw embeddings, row ``i`` = sample ``i``.

    Raises:
        RuntimeError: Some index was never returned.
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
