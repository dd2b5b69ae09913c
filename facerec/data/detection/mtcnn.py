"""Batched MTCNN face detection: boxes, scores and five landmarks per face, on CPU or GPU.

The cascade follows the MTCNN paper and its reference implementation (as ``facenet-pytorch`` ports it): an image
pyramid scanned by P-Net, candidates refined by R-Net, then O-Net scores, regresses and places the landmarks;
non-maximum suppression after each stage. Candidate windows are cut out of the images with ``roi_align`` (zero
outside the image, as the reference pads), all windows of a batch of images in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.functional import interpolate
from torchvision.ops import batched_nms, roi_align

from facerec.data.detection.networks import load_networks

PNET_STRIDE, PNET_WINDOW = 2, 12
"""P-Net looks at 12x12 windows every 2 pixels of a pyramid level."""


@dataclass(frozen=True)
class Faces:
    """The faces found in one image, by decreasing score.

    Attributes:
        boxes: (K, 4) float32 ``(x1, y1, x2, y2)`` pixels.
        scores: (K,) float32 face probabilities in [0, 1] (O-Net's).
        landmarks: (K, 5, 2) float32 ``(x, y)``: left eye, right eye, nose tip, left and right mouth corner (as
            seen in the image), the order :func:`facerec.data.align.align_face` takes.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def _normalise(images: Tensor) -> Tensor:
    """0..255 -> [-1, 1) as the networks were trained."""
    return (images - 127.5) * 0.0078125


def _square(boxes: Tensor) -> Tensor:
    """(K, 4) boxes -> squares of side max(w, h) on the same centres."""
    size = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True)
    corner = (boxes[:, :2] + boxes[:, 2:]) / 2 - size / 2
    return torch.cat([corner, corner + size], dim=1)


def _regress(boxes: Tensor, offsets: Tensor, inclusive: bool) -> Tensor:
    """Moves each side by its offset times the box's width or height (``+ 1`` for inclusive pixel boxes)."""
    size = boxes[:, 2:] - boxes[:, :2] + (1 if inclusive else 0)
    return boxes + offsets * size.repeat(1, 2)


def _nms_min(boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float) -> Tensor:
    """Greedy NMS per group whose overlap is intersection / smaller area (the reference's last stage).

    Returns the kept indices, by decreasing score.
    """
    order = scores.argsort(descending=True)
    boxes = boxes + (groups.to(boxes) * (boxes.max() + 1))[:, None]  # groups never overlap
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order.numel():
        best, rest = order[0], order[1:]
        keep.append(best)
        low = torch.maximum(boxes[best, :2], boxes[rest, :2])
        high = torch.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = (high - low + 1).clamp(min=0).prod(dim=1)
        order = rest[inter / torch.minimum(area[best], area[rest]) <= threshold]
    return torch.stack(keep) if keep else order


class FaceDetector(nn.Module):
    """MTCNN with the weights of the ``facenet-pytorch`` package (see :mod:`facerec.data.detection.networks`).

    Args:
        min_face_size: Smallest face side (pixels) searched for; larger is faster.
        thresholds: Face-probability thresholds of P-, R- and O-Net, each in [0, 1).
        factor: Scale step of the image pyramid, in (0, 1).
        weights: Folder with ``pnet.pt``, ``rnet.pt``, ``onet.pt``; default the installed package's.

    Raises:
        ValueError: A parameter out of range.
        FileNotFoundError: The weights are not installed (says how to install them).
    """

    def __init__(
        self,
        min_face_size: float = 20.0,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not min_face_size >= PNET_WINDOW:
            raise ValueError(f"min_face_size must be at least {PNET_WINDOW} pixels, got {min_face_size}")
        if len(thresholds) != 3 or not all(0 <= value < 1 for value in thresholds):
            raise ValueError(f"thresholds must be three probabilities in [0, 1), got {list(thresholds)}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(value) for value in thresholds)
        self.factor = float(factor)
        self.pnet, self.rnet, self.onet = load_networks(weights)

    @property
    def device(self) -> torch.device:
        """Where the networks are."""
        return next(self.parameters()).device

    def detect(self, images: Sequence[np.ndarray], batch_size: int = 16) -> list[Faces]:
        """Finds the faces in RGB uint8 (H, W, 3) images of any sizes; images of one size run as one batch.

        Args:
            images: The photos.
            batch_size: Images per forward pass (of one size).

        Returns:
            One :class:`Faces` per image, in order.

        Raises:
            ValueError: An image that is not a non-empty (H, W, 3) uint8 array (names its index).
        """
        for index, image in enumerate(images):
            if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3):
                raise ValueError(f"image {index}: expected an RGB uint8 (H, W, 3) array, got {_describe(image)}")
            if image.shape[2] != 3 or 0 in image.shape:
                raise ValueError(f"image {index}: expected an RGB uint8 (H, W, 3) array, got shape {image.shape}")
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        found: dict[int, Faces] = {}
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = torch.from_numpy(np.stack([images[i] for i in chunk])).to(self.device)
                found.update(zip(chunk, self._detect_batch(batch.permute(0, 3, 1, 2).float()), strict=True))
        return [found[index] for index in range(len(images))]

    @torch.inference_mode()
    def _detect_batch(self, images: Tensor) -> list[Faces]:
        """(N, 3, H, W) float 0..255 -> one :class:`Faces` per image."""
        boxes, groups = self._propose(images)
        boxes, groups = self._refine(images, boxes, groups)
        boxes, scores, landmarks, groups = self._output(images, boxes, groups)
        boxes, scores, landmarks, groups = (t.float().cpu().numpy() for t in (boxes, scores, landmarks, groups))
        return [Faces(boxes[groups == i], scores[groups == i], landmarks[groups == i]) for i in range(len(images))]

    def _scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: a face of ``min_face_size`` becomes P-Net's 12-pixel window, then ``factor`` steps down
        while the image's short side stays at least 12 pixels.
        """
        scale = PNET_WINDOW / self.min_face_size
        scales = []
        while min(height, width) * scale >= PNET_WINDOW:
            scales.append(scale)
            scale *= self.factor
        return scales

    def _propose(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """P-Net over the pyramid: square candidate boxes (M, 4) and their image indices (M,)."""
        height, width = images.shape[2:]
        boxes, scores, offsets, groups = [], [], [], []
        for scale in self._scales(height, width):
            level = interpolate(images, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
            level_offsets, probability = self.pnet(_normalise(level))
            mask = probability >= self.thresholds[0]
            where = mask.nonzero()  # (M, 3): image, row, column
            corner = where[:, [2, 1]].to(images.dtype) * PNET_STRIDE + 1
            level_boxes = torch.cat([(corner / scale).floor(), ((corner + PNET_WINDOW - 1) / scale).floor()], dim=1)
            level_scores = probability[mask]
            keep = batched_nms(level_boxes, level_scores, where[:, 0], 0.5)
            boxes.append(level_boxes[keep])
            scores.append(level_scores[keep])
            offsets.append(level_offsets.permute(0, 2, 3, 1)[mask][keep])
            groups.append(where[keep, 0])
        if not boxes:  # the image is smaller than min_face_size
            return images.new_zeros(0, 4), torch.zeros(0, dtype=torch.long, device=images.device)
        boxes, scores, offsets, groups = (torch.cat(parts) for parts in (boxes, scores, offsets, groups))
        keep = batched_nms(boxes, scores, groups, 0.7)
        return _square(_regress(boxes[keep], offsets[keep], inclusive=False)), groups[keep]

    def _refine(self, images: Tensor, boxes: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        """R-Net on the candidates: kept square boxes (M', 4) and their image indices."""
        if not len(boxes):
            return boxes, groups
        offsets, scores = self.rnet(_windows(images, boxes, groups, 24))
        passed = scores > self.thresholds[1]
        boxes, offsets, scores, groups = boxes[passed], offsets[passed], scores[passed], groups[passed]
        keep = batched_nms(boxes, scores, groups, 0.7)
        return _square(_regress(boxes[keep], offsets[keep], inclusive=True)), groups[keep]

    def _output(self, images: Tensor, boxes: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """O-Net: final boxes (K, 4), scores (K,), landmarks (K, 5, 2), image indices (K,), by decreasing score."""
        if not len(boxes):
            return boxes, boxes.new_zeros(0), boxes.new_zeros(0, 5, 2), groups
        offsets, points, scores = self.onet(_windows(images, boxes, groups, 48))
        passed = scores > self.thresholds[2]
        boxes, offsets, points, scores, groups = (t[passed] for t in (boxes, offsets, points, scores, groups))
        size = boxes[:, 2:] - boxes[:, :2] + 1
        landmarks = torch.stack([points[:, :5], points[:, 5:]], dim=2) * size[:, None] + boxes[:, None, :2] - 1
        boxes = _regress(boxes, offsets, inclusive=True)
        if not len(boxes):
            return boxes, scores, landmarks, groups
        keep = _nms_min(boxes, scores, groups, 0.7)
        return boxes[keep], scores[keep], landmarks[keep], groups[keep]


def _windows(images: Tensor, boxes: Tensor, groups: Tensor, size: int) -> Tensor:
    """Boxes (K, 4) of 1-based inclusive pixels cut from ``images`` and resized to (K, 3, size, size), normalised.

    ``roi_align`` averages the pixels under each output pixel (zero outside the image, as the reference pads).
    """
    rois = torch.cat([groups[:, None].to(boxes), boxes[:, :2] - 1, boxes[:, 2:]], dim=1)
    return _normalise(roi_align(images, rois, (size, size), sampling_ratio=-1, aligned=True))


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return type(value).__name__
