"""insightface's ArcFace IResNet (IR-18/34/50/100/200) as timm models.

Module and parameter names follow insightface's ``recognition/arcface_torch/backbones/iresnet.py``, so
``timm.create_model("iresnet50", checkpoint_path="backbone.pth")`` loads its released weights. The
classifier is insightface's output layer (``bn2`` → ``dropout`` → ``fc`` → ``features``); its default
width is the 512-d embedding. insightface's ``fp16`` flag is left out: use the trainer's precision.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import Tensor, nn

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


class IResNet(nn.Module):
    """ArcFace IResNet: 3×3 stem (stride 1), four stages of :class:`IBasicBlock` each halving the size.

    A 112×112 input gives a (512, 7, 7) feature map.

    Args:
        layers: Blocks per stage, e.g. (3, 4, 14, 3) for IR-50.
        num_classes: Width of insightface's output layer (the embedding); 0 removes it.
        in_chans: Input channels.
        img_size: Input size; sets the output layer's FC input (512 · (size / 16)²).
        drop_rate: Dropout before the output layer's FC.
        drop_path_rate: Stochastic depth, increasing linearly over the blocks up to this rate.
        global_pool: Only ``"avg"``: the pooling used without the output layer.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        num_classes: int = 512,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 112,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if global_pool != "avg":
            raise ValueError(f"IResNet supports only global_pool='avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = STAGE_WIDTHS[-1]
        height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
        self.final_size = (height // 16, width // 16)
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=1e-5)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        rates = [drop_path_rate * i / max(sum(layers) - 1, 1) for i in range(sum(layers))]
        in_channels, block_idx = STAGE_WIDTHS[0], 0
        self.feature_info = [dict(num_chs=STAGE_WIDTHS[0], reduction=1, module="prelu")]
        for stage_idx, (depth, channels) in enumerate(zip(layers, STAGE_WIDTHS, strict=True)):
            blocks = []
            for i in range(depth):
                blocks.append(IBasicBlock(in_channels, channels, 2 if i == 0 else 1, rates[block_idx]))
                in_channels, block_idx = channels, block_idx + 1
            setattr(self, f"layer{stage_idx + 1}", nn.Sequential(*blocks))
            self.feature_info.append(
                dict(num_chs=channels, reduction=2 ** (stage_idx + 1), module=f"layer{stage_idx + 1}")
            )
        self.reset_classifier(num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay (timm interface)."""
        return dict(stem=r"^conv1|^bn1|^prelu", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The output layer's FC."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the output layer (BN → Dropout → FC → BN1d) with a fresh one of width ``num_classes``.

        Args:
            num_classes: Output width; 0 removes the layer (``forward`` then average-pools).
            global_pool: Only ``None`` or ``"avg"``.
        """
        if global_pool not in (None, "avg"):
            raise ValueError(f"IResNet supports only global_pool='avg', got {global_pool!r}")
        self.num_classes = num_classes
        if not num_classes:
            self.bn2 = self.dropout = self.fc = self.features = nn.Identity()
            return
        channels = self.num_features
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.dropout = nn.Dropout(self.drop_rate)
        self.fc = nn.Linear(channels * self.final_size[0] * self.final_size[1], num_classes)
        self.features = nn.BatchNorm1d(num_classes, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, 512, H / 16, W / 16)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            use_checkpoint = self.grad_checkpointing and not torch.jit.is_scripting()
            x = checkpoint_seq(stage, x) if use_checkpoint else stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, 512, h, w) → (B, num_classes) through the output layer, or (B, 512) average-pooled.

        The pooled features are returned when ``pre_logits`` is set or there is no output layer.
        """
        if pre_logits or not self.num_classes:
            return x.mean((2, 3))
        return self.features(self.fc(self.dropout(self.bn2(x)).flatten(1)))

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
        first_conv="conv1",
        classifier="fc",
        license="mit",
        origin_url="https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
        paper_ids="arXiv:1801.07698",
        **kwargs,
    )


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
