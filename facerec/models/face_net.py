""":class:`FaceNet`: timm's model contract shared by insightface's face nets."""

from __future__ import annotations

from typing import ClassVar

import torch
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices  # what timm's own models use; not re-exported
from torch import Tensor, nn

from facerec.models.layers import GDC, OutputLayer

__all__ = ["FaceNet", "face_net_cfg"]


def face_net_cfg(first_conv: str, classifier: str, paper_ids: str) -> dict:
    """timm pretrained config of a face net: 112×112 inputs in [-1, 1], 512-d output, insightface origin."""
    return dict(
        url="",
        num_classes=512,
        input_size=(3, 112, 112),
        pool_size=(7, 7),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        first_conv=first_conv,
        classifier=classifier,
        license="mit",
        origin_url="https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
        paper_ids=paper_ids,
    )


def _insightface_head_keys(module: FaceNet, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """``state_dict`` post-hook: renames output-layer keys ``head.<name>`` to insightface's."""
    to_insightface = {f"{prefix}head.{name}": f"{prefix}{key}" for key, name in module.head_keys().items()}
    for key in [key for key in state_dict if key.startswith(f"{prefix}head.")]:
        source = next(p for p in to_insightface if key.startswith(p))
        state_dict[to_insightface[source] + key.removeprefix(source)] = state_dict.pop(key)


def _facerec_head_keys(module: FaceNet, state_dict: dict, prefix: str, *_) -> None:
    """``load_state_dict`` pre-hook: renames insightface's output-layer keys to ``head.<name>``."""
    from_insightface = {f"{prefix}{key}": f"{prefix}head.{name}" for key, name in module.head_keys().items()}
    for key in list(state_dict):
        source = next((p for p in from_insightface if key.startswith(p)), None)
        if source is not None:
            state_dict[from_insightface[source] + key.removeprefix(source)] = state_dict.pop(key)


class FaceNet(nn.Module):
    """Base face net: timm's model contract over ``stage_modules``, insightface's output layer as ``head``.

    Subclasses set ``stage_modules`` (module names per ``feature_info`` entry, stem first; a stage's
    feature is taken at its last name) and ``head_layer`` (:class:`OutputLayer` or :class:`GDC`), build
    the modules and ``feature_info``, and call :meth:`reset_classifier`. State-dict keys of the output
    layer are insightface's, so its ``backbone.pth`` loads with ``strict=True``.

    Args:
        num_features: Channels of the final feature map.
        num_classes: Width of the output layer (the embedding); 0 removes it.
        in_chans: Input channels.
        img_size: Input size; the output layer sees size / 16.
        drop_rate: Dropout before the output layer's FC.
        drop_path_rate: Stochastic depth, rising linearly over the residual units to this rate.
        global_pool: Only ``"avg"`` (pooling without the output layer); else ValueError.
    """

    stage_modules: ClassVar[tuple[tuple[str, ...], ...]]
    head_layer: ClassVar[type[OutputLayer] | type[GDC]]
    head: nn.Module
    feature_info: list[dict]

    def __init__(
        self,
        num_features: int,
        *,
        num_classes: int = 512,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 112,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self._check_pool(global_pool)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.num_features = self.head_hidden_size = num_features
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.final_size = (self.img_size[0] // 16, self.img_size[1] // 16)
        self.grad_checkpointing = False
        self.register_state_dict_post_hook(_insightface_head_keys)
        self.register_load_state_dict_pre_hook(_facerec_head_keys)

    def _check_pool(self, global_pool: str | None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"{type(self).__name__} supports only global_pool='avg', got {global_pool!r}")

    def _drop_path_rates(self, units: int) -> list[float]:
        """Per-unit stochastic-depth rates, linear from 0 to ``drop_path_rate``."""
        return [self.drop_path_rate * i / max(units - 1, 1) for i in range(units)]

    def _feature_info(self, channels: list[int], reductions: list[int]) -> list[dict]:
        """One ``feature_info`` entry per stage, at the stage's last module."""
        return [
            dict(num_chs=c, reduction=r, module=names[-1])
            for c, r, names in zip(channels, reductions, self.stage_modules, strict=True)
        ]

    def _init_weights(self, module: nn.Module) -> None:
        """Initialises ``module``'s weights (whole net or new output layer); no-op here."""

    def head_keys(self) -> dict[str, str]:
        """insightface key prefix → ``head`` key prefix for the output layer; empty without one."""
        return getattr(self.head, "insightface_keys", {})

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Enables gradient checkpointing per block (not the stem)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The output layer (``nn.Identity`` without it)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the output layer by a fresh one of width ``num_classes`` (0: none, ``forward`` average-pools).

        ``global_pool``: only ``None`` or ``"avg"``.
        """
        self._check_pool(global_pool)
        self.num_classes = num_classes
        if not num_classes:
            self.head = nn.Identity()
            return
        self.head = self.head_layer((self.num_features, *self.final_size), num_classes, self.drop_rate)
        self._init_weights(self.head)

    def _stages(self) -> list[list[nn.Module]]:
        """Modules of each stage, ``Sequential``s expanded (checkpointing per block)."""
        stages = []
        for names in self.stage_modules:
            modules = []
            for name in names:
                module = self.get_submodule(name)
                modules.extend(module if isinstance(module, nn.Sequential) else [module])
            stages.append(modules)
        return stages

    def _run_stage(self, index: int, modules: list[nn.Module], x: Tensor) -> Tensor:
        if index and modules and self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(modules, x)
        for module in modules:
            x = module(x)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, num_features, H / 16, W / 16)."""
        for index, modules in enumerate(self._stages()):
            x = self._run_stage(index, modules, x)
        return x

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Final feature map and stage outputs, timm's convention (``norm`` ignored: no final norm).

        Args:
            x: (B, 3, H, W).
            indices: Last n stages if int, all if ``None``, else these (negative from the end).
            stop_early: Stop after the last requested stage (which then is the final map).
            output_fmt: Only ``"NCHW"``; else ValueError.
            intermediates_only: Return only the intermediates.

        Returns:
            ``(features, intermediates)`` or ``intermediates``: (B, C_i, H / r_i, W / r_i) in stage order.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__} supports only output_fmt='NCHW', got {output_fmt!r}")
        stages = self._stages()
        take_indices, max_index = feature_take_indices(len(stages), indices)
        if stop_early:
            stages = stages[: max_index + 1]
        intermediates = []
        for index, modules in enumerate(stages):
            x = self._run_stage(index, modules, x)
            if index in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drops stages after the last of ``indices`` and, if ``prune_head`` or stages dropped, the output layer.

        ``prune_norm`` is ignored (no final norm). Returns the kept absolute stage indices.
        """
        take_indices, max_index = feature_take_indices(len(self.stage_modules), indices)
        for names in self.stage_modules[max_index + 1 :]:
            for name in names:
                self.set_submodule(name, nn.Sequential())
        if max_index < len(self.stage_modules) - 1:
            info = self.feature_info[max_index]
            self.num_features = self.head_hidden_size = info["num_chs"]
            self.final_size = (self.img_size[0] // info["reduction"], self.img_size[1] // info["reduction"])
        if prune_head or max_index < len(self.stage_modules) - 1:
            self.reset_classifier(0)
        return take_indices

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) → (B, num_classes) via the output layer, or (B, C) average-pooled if ``pre_logits``/none."""
        if pre_logits or not self.num_classes:
            return x.mean((2, 3))
        return self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, num_classes), or (B, num_features) when ``num_classes=0``."""
        return self.forward_head(self.forward_features(x))
