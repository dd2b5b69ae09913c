"""insightface's IResNet (IR-18/34/50/100/200) as timm models; names match ``arcface_torch/backbones/iresnet.py``.

So ``timm.create_model("iresnet50", checkpoint_path="backbone.pth")`` loads its weights. No ``fp16`` flag."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from facerec.models.face_net import FaceNet, face_net_cfg
from facerec.models.layers import OutputLayer

__all__ = ["IBasicBlock", "IResNet"]

STAGE_WIDTHS = (64, 128, 256, 512)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Improved residual unit: BN → 3×3 conv → BN → PReLU → 3×3 conv (stride) → BN, plus shortcut.

    Args:
        in_channels: C_in.
        channels: C_out.
        stride: Stride of the second conv (and of the 1×1 shortcut projection).
        drop_path: Stochastic-depth rate of the residual branch.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, drop_path: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels, eps=1e-5),
            )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) → (B, C_out, H / stride, W / stride)."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.drop_path(out) + shortcut


class IResNet(FaceNet):
    """ArcFace IResNet: 3×3 stem (stride 1), four :class:`IBasicBlock` stages each halving the size.

    112×112 input → (512, 7, 7) map; output layer :class:`OutputLayer` (keys ``bn2``, ``fc``, ``features``).

    Args:
        layers: Blocks per stage, e.g. (3, 4, 14, 3) for IR-50.
        **kwargs: :class:`FaceNet`'s (``num_classes`` 512; ``img_size`` sets the FC input 512·(size / 16)²).
    """

    stage_modules = (("conv1", "bn1", "prelu"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
    head_layer = OutputLayer

    def __init__(self, layers: tuple[int, int, int, int], **kwargs: Any) -> None:
        super().__init__(STAGE_WIDTHS[-1], **kwargs)
        self.conv1 = nn.Conv2d(self.in_chans, STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=1e-5)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        rates = self._drop_path_rates(sum(layers))
        in_channels, block_idx = STAGE_WIDTHS[0], 0
        for stage_idx, (depth, channels) in enumerate(zip(layers, STAGE_WIDTHS, strict=True)):
            blocks = []
            for i in range(depth):
                blocks.append(IBasicBlock(in_channels, channels, 2 if i == 0 else 1, rates[block_idx]))
                in_channels, block_idx = channels, block_idx + 1
            setattr(self, f"layer{stage_idx + 1}", nn.Sequential(*blocks))
        self.feature_info = self._feature_info([STAGE_WIDTHS[0], *STAGE_WIDTHS], [1, 2, 4, 8, 16])
        self.reset_classifier(self.num_classes)
        self._init_weights(self)

    def _init_weights(self, module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay (timm interface)."""
        return dict(stem=r"^conv1|^bn1|^prelu", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")


_cfg = partial(face_net_cfg, first_conv="conv1", classifier="fc", paper_ids="arXiv:1801.07698")

default_cfgs = generate_default_cfgs(
    {name: _cfg() for name in ("iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200")}
)


def _create_iresnet(variant: str, layers: tuple[int, int, int, int], pretrained: bool, **kwargs) -> IResNet:
    return build_model_with_cfg(IResNet, variant, pretrained, layers=layers, **kwargs)


@register_model
def iresnet18(pretrained: bool = False, **kwargs) -> IResNet:
    """IR-18: stage depths 2-2-2-2."""
    return _create_iresnet("iresnet18", (2, 2, 2, 2), pretrained, **kwargs)


@register_model
def iresnet34(pretrained: bool = False, **kwargs) -> IResNet:
    """IR-34: stage depths 3-4-6-3."""
    return _create_iresnet("iresnet34", (3, 4, 6, 3), pretrained, **kwargs)


@register_model
def iresnet50(pretrained: bool = False, **kwargs) -> IResNet:
    """IR-50: stage depths 3-4-14-3."""
    return _create_iresnet("iresnet50", (3, 4, 14, 3), pretrained, **kwargs)


@register_model
def iresnet100(pretrained: bool = False, **kwargs) -> IResNet:
    """IR-100: stage depths 3-13-30-3."""
    return _create_iresnet("iresnet100", (3, 13, 30, 3), pretrained, **kwargs)


@register_model
def iresnet200(pretrained: bool = False, **kwargs) -> IResNet:
    """IR-200: stage depths 6-26-60-6."""
    return _create_iresnet("iresnet200", (6, 26, 60, 6), pretrained, **kwargs)
