"""MagFace: magnitude-aware angular margin and its regulariser (Meng et al., CVPR 2021), and its quality score."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.checks import check_range
from facerec.heads.margin import TargetMargin
from facerec.heads.numerics import full_precision
from facerec.heads.registry import register_margin
from facerec.heads.terms import LossTerm


def quality(embeddings: Tensor) -> Tensor:
    """MagFace's quality score of each face: the magnitude ``a = ‖x‖`` of its raw embedding, (B, E) → (B,).

    Higher is better: MagFace training ties the magnitude to how easily a face is recognised, so ``a``
    ranks faces by quality (the paper drops the lowest-quality faces by it). The score is the raw norm,
    unclipped, as the authors' quality evaluation computes it; training pulls it into
    ``[lower_norm, upper_norm]`` (10 to 110 by default), where m(a) and g(a) act. It means something
    only for a network trained with ``head=magface``, on raw embeddings::

        embedder = facerec.load_model("run/checkpoints/last.ckpt", flip=False)  # or an ONNX export
        images = torch.stack([embedder.transform(image=rgb)["image"] for rgb in faces])  # RGB uint8 (H, W, 3)
        with torch.no_grad():
            scores = quality(embedder(images.to(embedder.device)))

    Use ``flip=False``: with ``flip=True`` the embedder returns the sum of the image's and its mirror's
    embeddings, whose norm is not on the training scale (up to twice it). ``embed_images`` returns
    L2-normalised embeddings (every score 1), so call the embedder itself.

    Args:
        embeddings: (B, E) raw embeddings, any float dtype.

    Returns:
        (B,) float32 (float64 for float64 input) magnitudes.
    """
    return full_precision(embeddings).norm(dim=1)


def check_norm_bounds(path: str, lower_norm: float, upper_norm: float) -> None:
    """Raises ``ValueError`` naming ``head.<path>.lower_norm``/``upper_norm`` unless ``0 < l_a < u_a``."""
    check_range(f"{path}.lower_norm", lower_norm, 0.0, low_open=True)
    check_range(f"{path}.upper_norm", upper_norm, lower_norm, low_open=True)


@register_margin("magface")
class MagFace(TargetMargin):
    """Target logit ``s·cos(θ_y + m(a))``, ``m(a)`` linear in the clipped magnitude ``a = clip(‖x‖, l_a, u_a)``.

    ``m(a) = l_m + (u_m − l_m)·(a − l_a)/(u_a − l_a)``: from ``l_m`` at ``a = l_a`` to ``u_m`` at
    ``a = u_a``. The gradient flows through ``a`` (zero outside ``[l_a, u_a]``): the margin pulls
    magnitudes down, the regulariser ``λ_g·g(a)`` (:class:`MagFaceRegularizer`) pushes them up, and the
    balance gives easier faces (closer to their centre) larger magnitudes. The regulariser is a loss
    term that must share ``l_a``, ``u_a`` (``conf/head/magface.yaml`` sets them from the margin); in
    Python: ``create_head("magface", E, C, terms={"magface": MagFaceRegularizer()})``. Where
    ``θ_y > π − m(a)`` the target is the authors' fallback ``cos θ_y − m(a)·sin m(a)``; with
    ``easy_margin`` (the authors' code's default) the margin applies only where ``cos θ_y > 0``.

    Args:
        scale: s (default 64).
        lower_norm: l_a > 0 (default 10).
        upper_norm: u_a > l_a (default 110).
        lower_margin: l_m in radians, the margin at ``a ≤ l_a`` (default 0.45).
        upper_margin: u_m in [l_m, π/2), the margin at ``a ≥ u_a`` (default 0.8).
        easy_margin: Apply the margin only to positive target cosines (default False, the paper's loss).
    """

    def __init__(
        self,
        scale: float = 64.0,
        lower_norm: float = 10.0,
        upper_norm: float = 110.0,
        lower_margin: float = 0.45,
        upper_margin: float = 0.8,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(scale)
        check_norm_bounds("margin", lower_norm, upper_norm)
        check_range("margin.lower_margin", lower_margin, 0.0, math.pi / 2, high_open=True)
        check_range("margin.upper_margin", upper_margin, lower_margin, math.pi / 2, high_open=True)
        self.lower_norm = lower_norm
        self.upper_norm = upper_norm
        self.lower_margin = lower_margin
        self.upper_margin = upper_margin
        self.easy_margin = easy_margin

    def adaptive_margin(self, norms: Tensor) -> Tensor:
        """m(a) (B,) from the magnitudes ‖x‖ (B,), differentiable."""
        slope = (self.upper_margin - self.lower_margin) / (self.upper_norm - self.lower_norm)
        return self.lower_margin + slope * (norms.clamp(self.lower_norm, self.upper_norm) - self.lower_norm)

    def target_logit(self, cos_target: Tensor, norms: Tensor) -> Tensor:
        """``cos(θ + m(a))`` (B,), the fallback past ``π − m(a)``; finite gradients at ``cos = ±1``."""
        margin = self.adaptive_margin(norms)
        sin_target = torch.sqrt((1.0 - cos_target * cos_target).clamp_min(1e-12))
        with_margin = cos_target * torch.cos(margin) - sin_target * torch.sin(margin)
        if self.easy_margin:
            return torch.where(cos_target > 0, with_margin, cos_target)
        past_pi = cos_target <= torch.cos(math.pi - margin)
        return torch.where(past_pi, cos_target - margin * torch.sin(margin), with_margin)


class MagFaceRegularizer(LossTerm):
    """``λ_g·mean_i g(a_i)``, ``g(a) = a/u_a² + 1/a``, ``a = clip(‖x_i‖, l_a, u_a)`` (MagFace's magnitude term).

    g is convex and decreasing on ``[l_a, u_a]``; with the margin's ``m(a)`` it gives each face a
    unique optimal magnitude when ``λ_g ≥ s·k·u_a²·l_a²/(u_a² − l_a²)``, ``k = (u_m − l_m)/(u_a − l_a)``
    (22.6 for the paper's values; the paper uses 35).

    Args:
        weight: λ_g ≥ 0 (default 35).
        lower_norm: l_a, the margin's (default 10).
        upper_norm: u_a, the margin's (default 110).
    """

    def __init__(self, weight: float = 35.0, lower_norm: float = 10.0, upper_norm: float = 110.0) -> None:
        super().__init__()
        check_range("terms.magface.weight", weight, 0.0)
        check_norm_bounds("terms.magface", lower_norm, upper_norm)
        self.weight = weight
        self.lower_norm = lower_norm
        self.upper_norm = upper_norm

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar ``λ_g·mean g(a)`` over embeddings (B, E); ``labels`` (B,) unused."""
        norms = full_precision(embeddings).norm(dim=1).clamp(self.lower_norm, self.upper_norm)
        return self.weight * (norms / self.upper_norm**2 + 1.0 / norms).mean()
