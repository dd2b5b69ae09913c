"""insightface's MobileFaceNet as timm models ``mobilefacenet`` (``get_mbf``) and ``mobilefacenet_large``.

Names match ``arcface_torch/backbones/mobilefacenet.py``; the GDC output layer is also the neck ``neck=gdc``."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from facerec.models.face_net import FaceNet, face_net_cfg
from facerec.models.layers import GDC

__all__ = ["MobileFaceNet"]


class ConvBlock(nn.Module):
    """Conv → BN → PReLU, as ``layers`` = (conv, bn, prelu)."""

    def __init__(
        self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
            nn.PReLU(out_c),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, C_out, H', W')."""
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv → BN without activation, as ``layers`` = (conv, bn)."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, 0, groups=groups, bias=False), nn.BatchNorm2d(out_c)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, C_out, H', W')."""
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1×1 expand → 3×3 depthwise (stride) → 1×1 linear projection.

    Args:
        in_c: C_in.
        out_c: C_out.
        hidden: Expanded width (insightface's ``groups``).
        stride: Stride of the depthwise conv.
        residual: Add the input (needs ``in_c == out_c`` and stride 1).
        drop_path: Stochastic-depth rate of the residual branch.
    """

    def __init__(self, in_c: int, out_c: int, hidden: int, stride: int, residual: bool, drop_path: float = 0.0) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, hidden),
            ConvBlock(hidden, hidden, kernel=3, stride=stride, padding=1, groups=hidden),
            LinearBlock(hidden, out_c),
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, C_out, H / stride, W / stride)."""
        out = self.layers(x)
        return x + self.drop_path(out) if self.residual else out


class Residual(nn.Module):
    """``num_block`` residual :class:`DepthWise` units of width ``c``."""

    def __init__(self, c: int, num_block: int, hidden: int, drop_paths: list[float]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(DepthWise(c, c, hidden, 1, True, drop_paths[i]) for i in range(num_block)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, H, W)."""
        return self.layers(x)


class MobileFaceNet(FaceNet):
    """MobileFaceNet: stride-2 stem, depthwise bottlenecks, 1×1 ``conv_sep`` to 512 channels.

    112×112 input → (512, 7, 7) map; output layer :class:`GDC` (keys ``features.layers.*``).

    Args:
        blocks: Residual units per group (a first group of 1 is a plain depthwise conv).
        scale: Width multiplier of the 64/128 base widths.
        **kwargs: :class:`FaceNet`'s (``num_classes`` 512; ``img_size`` sets the GDC kernel, size / 16).
    """

    stage_modules = (
        ("layers.0",),
        ("layers.1",),
        ("layers.2", "layers.3"),
        ("layers.4", "layers.5"),
        ("layers.6", "layers.7", "conv_sep"),
    )
    head_layer = GDC

    def __init__(self, blocks: tuple[int, int, int, int] = (1, 4, 6, 2), scale: int = 2, **kwargs: Any) -> None:
        super().__init__(512, **kwargs)
        c1, c2 = 64 * scale, 128 * scale
        rates = self._drop_path_rates(sum(blocks))
        offsets = [sum(blocks[:i]) for i in range(4)]

        def residual(i: int, c: int, hidden: int) -> Residual:
            return Residual(c, blocks[i], hidden, rates[offsets[i] : offsets[i] + blocks[i]])

        first = ConvBlock(c1, c1, kernel=3, padding=1, groups=64) if blocks[0] == 1 else residual(0, c1, 128)
        self.layers = nn.ModuleList(
            [
                ConvBlock(self.in_chans, c1, kernel=3, stride=2, padding=1),
                first,
                DepthWise(c1, c1, 128, 2, False),
                residual(1, c1, 128),
                DepthWise(c1, c2, 256, 2, False),
                residual(2, c2, 256),
                DepthWise(c2, c2, 512, 2, False),
                residual(3, c2, 256),
            ]
        )
        self.conv_sep = ConvBlock(c2, self.num_features)
        self.feature_info = self._feature_info([c1, c1, c1, c2, self.num_features], [2, 2, 4, 8, 16])
        self._init_weights(self)
        self.reset_classifier(self.num_classes)

    def _init_weights(self, module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay (timm interface)."""
        return dict(stem=r"^layers\.0\.", blocks=[(r"^layers\.(\d+)", None), (r"^conv_sep", (99999,))])


_cfg = partial(face_net_cfg, first_conv="layers.0.layers.0", classifier="features", paper_ids="arXiv:1804.07573")

default_cfgs = generate_default_cfgs({"mobilefacenet": _cfg(), "mobilefacenet_large": _cfg()})
# features_only=True: stages are in a ModuleList, so features are taken with forward hooks.
HOOK_FEATURES = dict(feature_cls="hook")


def _create_mobilefacenet(variant: str, blocks: tuple[int, int, int, int], scale: int, pretrained: bool, **kwargs):
    return build_model_with_cfg(
        MobileFaceNet, variant, pretrained, blocks=blocks, scale=scale, feature_cfg=HOOK_FEATURES, **kwargs
    )


@register_model
def mobilefacenet(pretrained: bool = False, **kwargs) -> MobileFaceNet:
    """insightface ``mbf``: blocks 1-4-6-2, scale 2."""
    return _create_mobilefacenet("mobilefacenet", (1, 4, 6, 2), 2, pretrained, **kwargs)


@register_model
def mobilefacenet_large(pretrained: bool = False, **kwargs) -> MobileFaceNet:
    """insightface ``mbf_large``: blocks 2-8-12-4, scale 4."""
    return _create_mobilefacenet("mobilefacenet_large", (2, 8, 12, 4), 4, pretrained, **kwargs)
