"""SphereFace2: one-vs-all binary classification per class (Wen et al., ICLR 2022), variant SphereFace2-C."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.distributed import scale_grad
from facerec.heads.checks import check_range
from facerec.heads.losses import ClassificationLoss
from facerec.heads.margin import Margin, MarginInput
from facerec.heads.registry import register_margin


def initial_bias(num_classes: int, scale: float, margin: float, lam: float, t: float) -> float:
    """The bias b the authors start SphereFace2-C from, for C ≥ 2 classes (their closed form, from r, m, λ, t)."""
    if num_classes < 2:
        raise ValueError(f"the sphereface2 margin needs at least 2 classes, got {num_classes}")
    ratio = lam / ((1.0 - lam) * (num_classes - 1.0))
    neutral = 2.0 * 0.5**t - 1.0  # g(0)
    positive, negative = scale * (neutral - margin), scale * (neutral + margin)
    root = math.sqrt((1.0 - ratio) ** 2 + 4.0 * ratio * math.exp(positive - negative))
    return math.log(2.0 * ratio) - negative - math.log(1.0 - ratio + root)


class SphereFace2Loss(ClassificationLoss):
    """Weighted one-vs-all logistic loss over every class: the batch mean of

    ``w·[λ·log(1 + e^{−z_y}) + (1 − λ)·Σ_{j≠y} log(1 + e^{z_j})]``, ``w = lw/r``.

    The authors' binary cross-entropy weights each of the B·C terms ``lw·C/r·(λ or 1 − λ)`` and averages
    over B·C: the same as the class sum above, averaged over B. The class sum goes through
    ``inputs.columns.sum``, exact under Partial FC without sampling.

    Args:
        lam: λ, weight of the positive term (default 0.7; the margin's ``lam``).
        loss_weight: lw (default 50).
        scale: r, the margin's scale (default 40).

    Raises:
        ValueError: In forward, when the step sees fewer than C class columns (Partial FC with
            ``sample_rate < 1``): the loss needs every negative class.
    """

    def __init__(self, lam: float = 0.7, loss_weight: float = 50.0, scale: float = 40.0) -> None:
        super().__init__()
        check_range("loss.lam", lam, 0.0, 1.0, low_open=True, high_open=True)
        check_range("loss.loss_weight", loss_weight, 0.0, low_open=True, high_open=True)
        check_range("loss.scale", scale, 0.0, low_open=True, high_open=True)
        self.lam = lam
        self.loss_weight = loss_weight
        self.scale = scale

    def forward(self, logits: Tensor, inputs: MarginInput) -> Tensor:
        """Scalar loss of (B, n) binary logits."""
        if inputs.columns.num_columns < inputs.columns.num_classes:
            raise ValueError(
                "the sphereface2 loss sums a binary loss over all C classes, but this step sees "
                f"{inputs.columns.num_columns} of {inputs.columns.num_classes} (Partial FC sampling); "
                "set head.classifier.sample_rate=1.0"
            )
        positive = inputs.target_mask()
        terms = torch.where(positive, self.lam * F.softplus(-logits), (1.0 - self.lam) * F.softplus(logits))
        return self.loss_weight / self.scale * inputs.columns.sum(terms).mean()


@register_margin("sphereface2")
class SphereFace2(Margin):
    """Binary logits ``z_j = r·(g(cos θ_j) ∓ m) + b``: −m for the sample's class, +m for the others.

    ``g(c) = 2·((c + 1)/2)^t − 1`` is the similarity adjustment of SphereFace2-C (``magn_type='C'``, the
    authors' default; the A and M variants are not implemented). As in the authors' code, g and the margin
    shift the logits' values only: the gradient is that of ``r·cos θ_j + b``. The learnable scalar b is
    set on the first forward from the number of classes C (:func:`initial_bias`); the buffer
    ``bias_ready`` records that, so a loaded checkpoint keeps its b. Use with :class:`SphereFace2Loss`.

    Under Partial FC b acts on every rank's class columns: each rank's gradient of b covers its own columns,
    so it is multiplied by ``inputs.columns.grad_scale`` (the world size) and DDP's average gives the sum.

    Args:
        scale: r (default 40).
        margin: m, the additive margin on g (default 0.4).
        lam: λ in (0, 1), the weight of the positive term; only b's initialisation uses it here (default 0.7).
        t: Exponent of the similarity adjustment g (default 3; t = 1 is no adjustment).
    """

    sampling = "refused"

    def __init__(self, scale: float = 40.0, margin: float = 0.4, lam: float = 0.7, t: float = 3.0) -> None:
        super().__init__()
        check_range("margin.scale", scale, 0.0, low_open=True, high_open=True)
        check_range("margin.margin", margin, 0.0, 1.0)
        check_range("margin.lam", lam, 0.0, 1.0, low_open=True, high_open=True)
        check_range("margin.t", t, 0.0, 16.0, low_open=True)
        self.scale = scale
        self.margin = margin
        self.lam = lam
        self.t = t
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("bias_ready", torch.tensor(False))

    def adjusted(self, cos: Tensor, positive: Tensor) -> Tensor:
        """``g(cos) − m`` where ``positive`` else ``g(cos) + m``, any shape."""
        sign = 1.0 - 2.0 * positive.to(cos.dtype)
        return 2.0 * ((cos + 1.0) / 2.0).pow(self.t) - 1.0 + self.margin * sign

    def default_loss(self) -> SphereFace2Loss:
        """The one-vs-all loss with this margin's λ and r (and the authors' loss weight)."""
        return SphereFace2Loss(lam=self.lam, scale=self.scale)

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) binary logits; the first call sets b from ``inputs.columns.num_classes``."""
        if not self.bias_ready:
            with torch.no_grad():
                num_classes = inputs.columns.num_classes
                self.bias.fill_(initial_bias(num_classes, self.scale, self.margin, self.lam, self.t))
                self.bias_ready.fill_(True)
        cos = inputs.cos
        shift = (self.adjusted(cos, inputs.target_mask()) - cos).detach()
        bias = scale_grad(self.bias, inputs.columns.grad_scale).to(cos.dtype)
        return self.scale * (cos + shift) + bias
