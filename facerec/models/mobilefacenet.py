"""insightface's MobileFaceNet as timm models (``mobilefacenet``, ``mobilefacenet_large``).

Module and parameter names follow insightface's ``recognition/arcface_torch/backbones/mobilefacenet.py``
(``get_mbf``: blocks 1-4-6-2, scale 2; ``get_mbf_large``: blocks 2-8-12-4, scale 4). The classifier is
insightface's GDC output layer ``features`` (7×7 depthwise conv → BN → FC → BN1d); its default width is
the 512-d embedding. In facerec, the matching neck is :class:`facerec.models.GDCNeck` (``neck=gdc``).
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import Tensor, nn

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

    def __init__(
        self, in_c: int, out_c: int, kernel: int | tuple[int, int] = 1, stride: int = 1, groups: int = 1
    ) -> None:
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


class GDC(nn.Module):
    """Global depthwise conv output layer: k×k depthwise LinearBlock → flatten → FC (no bias) → BN1d."""

    def __init__(self, channels: int, final_size: tuple[int, int], num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(channels, channels, kernel=final_size, groups=channels),
            nn.Flatten(),
            nn.Linear(channels, num_classes, bias=False),
            nn.BatchNorm1d(num_classes),
        )
        self.dropout = nn.Dropout(drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) → (B, num_classes); dropout sits before the FC."""
        conv, flatten, fc, bn = self.layers
        return bn(fc(self.dropout(flatten(conv(x)))))


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class MobileFaceNet(nn.Module):
    """MobileFaceNet: stride-2 stem, depthwise bottlenecks, 1×1 ``conv_sep`` to 512 channels.

    A 112×112 input gives a (512, 7, 7) feature map.

    Args:
        blocks: Residual units in the four groups (the first group is a plain depthwise conv when 1).
        scale: Width multiplier of the 64/128 base widths.
        num_classes: Width of the GDC output layer (the embedding); 0 removes it.
        in_chans: Input channels.
        img_size: Input size; sets the GDC kernel (size / 16).
        drop_rate: Dropout before the GDC's FC.
        drop_path_rate: Stochastic depth of the residual units, increasing linearly up to this rate.
        global_pool: Only ``"avg"``: the pooling used without the output layer.
    """

    def __init__(
        self,
        blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
        scale: int = 2,
        num_classes: int = 512,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 112,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if global_pool != "avg":
            raise ValueError(f"MobileFaceNet supports only global_pool='avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = 512
        height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
        self.final_size = (height // 16, width // 16)
        self.grad_checkpointing = False

        c1, c2 = 64 * scale, 128 * scale
        rates = [drop_path_rate * i / max(sum(blocks) - 1, 1) for i in range(sum(blocks))]
        offsets = [sum(blocks[:i]) for i in range(4)]

        def residual(i: int, c: int, hidden: int) -> Residual:
            return Residual(c, blocks[i], hidden, rates[offsets[i] : offsets[i] + blocks[i]])

        first = ConvBlock(c1, c1, kernel=3, padding=1, groups=64) if blocks[0] == 1 else residual(0, c1, 128)
        self.layers = nn.ModuleList(
            [
                ConvBlock(in_chans, c1, kernel=3, stride=2, padding=1),
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
        self.feature_info = [
            dict(num_chs=c1, reduction=2, module="layers.0"),
            dict(num_chs=c1, reduction=2, module="layers.1"),
            dict(num_chs=c1, reduction=4, module="layers.3"),
            dict(num_chs=c2, reduction=8, module="layers.5"),
            dict(num_chs=self.num_features, reduction=16, module="conv_sep"),
        ]
        _init_weights(self)
        self.reset_classifier(num_classes)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay (timm interface)."""
        return dict(stem=r"^layers\.0\.", blocks=[(r"^layers\.(\d+)", None), (r"^conv_sep", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each group's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The GDC output layer."""
        return self.features

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the GDC output layer with a fresh one of width ``num_classes`` (0 removes it).

        Args:
            num_classes: Output width; 0 removes the layer (``forward`` then average-pools).
            global_pool: Only ``None`` or ``"avg"``.
        """
        if global_pool not in (None, "avg"):
            raise ValueError(f"MobileFaceNet supports only global_pool='avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.features = (
            GDC(self.num_features, self.final_size, num_classes, self.drop_rate) if num_classes else nn.Identity()
        )
        _init_weights(self.features)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, 512, H / 16, W / 16)."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.layers, x)
        else:
            for layer in self.layers:
                x = layer(x)
        return self.conv_sep(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, 512, h, w) → (B, num_classes) through GDC, or (B, 512) average-pooled.

        The pooled features are returned when ``pre_logits`` is set or there is no output layer.
        """
        if pre_logits or not self.num_classes:
            return x.mean((2, 3))
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, num_classes), or (B, 512) when ``num_classes=0``."""
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs) -> dict:
    return dict(
        url="",
        num_classes=512,
        input_size=(3, 112, 112),
        pool_size=(7, 7),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        first_conv="layers.0.layers.0",
        classifier="features",
        license="mit",
        origin_url="https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
        paper_ids="arXiv:1804.07573",
        **kwargs,
    )


default_cfgs = generate_default_cfgs({"mobilefacenet": _cfg(), "mobilefacenet_large": _cfg()})
# features_only=True: the stages live in a ModuleList, so features are taken with forward hooks.
HOOK_FEATURES = dict(feature_cls="hook")


@register_model
def mobilefacenet(pretrained: bool = False, **kwargs) -> MobileFaceNet:
    """insightface ``mbf``: blocks 1-4-6-2, scale 2."""
    return build_model_with_cfg(
        MobileFaceNet,
        "mobilefacenet",
        pretrained,
        blocks=(1, 4, 6, 2),
        scale=2,
        feature_cfg=HOOK_FEATURES,
        **kwargs,
    )


@register_model
def mobilefacenet_large(pretrained: bool = False, **kwargs) -> MobileFaceNet:
    """insightface ``mbf_large``: blocks 2-8-12-4, scale 4."""
    return build_model_with_cfg(
        MobileFaceNet,
        "mobilefacenet_large",
        pretrained,
        blocks=(2, 8, 12, 4),
        scale=4,
        feature_cfg=HOOK_FEATURES,
        **kwargs,
    )
