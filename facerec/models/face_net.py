"""timm's model contract for insightface's face nets, written once: :class:`FaceNet`."""

from __future__ import annotations

from typing import ClassVar

import torch
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices  # what timm's own models use; not re-exported
from torch import Tensor, nn

from facerec.models.layers import GDC, OutputLayer

__all__ = ["FaceNet", "face_net_cfg"]


def face_net_cfg(first_conv: str, classifier: str, paper_ids: str) -> dict:
    """timm pretrained config of a face net: 112×112 inputs in [-1, 1], 512-d output layer, insightface's origin."""
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
    """``state_dict`` post-hook: the output layer's ``head.<name>`` keys become insightface's."""
    to_insightface = {f"{prefix}head.{name}": f"{prefix}{key}" for key, name in module.head_keys().items()}
    for key in [key for key in state_dict if key.startswith(f"{prefix}head.")]:
        source = next(p for p in to_insightface if key.startswith(p))
        state_dict[to_insightface[source] + key.removeprefix(source)] = state_dict.pop(key)


def _facerec_head_keys(module: FaceNet, state_dict: dict, prefix: str, *_) -> None:
    """``load_state_dict`` pre-hook: insightface's output-layer keys become ``head.<name>``."""
    from_insightface = {f"{prefix}{key}": f"{prefix}head.{name}" for key, name in module.head_keys().items()}
    for key in list(state_dict):
        source = next((p for p in from_insightface if key.startswith(p)), None)
        if source is not None:
            state_dict[from_insightface[source] + key.removeprefix(source)] = state_dict.pop(key)


class FaceNet(nn.Module):
    """Base of the face nets: ``forward_features`` / ``forward_intermediates`` over the stages, insightface's
    output layer as ``head``, and the rest of timm's model contract.

    A subclass names in ``stage_modules`` the modules each ``feature_info`` entry runs through (the stem
    first; the last name of a stage is where the feature is taken), builds them and ``feature_info``, and
    calls :meth:`reset_classifier`. The output layer is ``head_layer`` (:class:`OutputLayer` or :class:`GDC`);
    in the state dict its keys are insightface's (the layer's ``insightface_keys``), so insightface's
    ``backbone.pth`` loads with ``strict=True``.

    Args:
        num_features: Channels of the final feature map.
        num_classes: Width of the output layer (the embedding); 0 removes it.
        in_chans: Input channels.
        img_size: Input size; sets the output layer's input size (size / 16).
        drop_rate: Dropout before the output layer's FC.
        drop_path_rate: Stochastic depth, increasing linearly over the residual units up to this rate.
        global_pool: Only ``"avg"``: the pooling used without the output layer.
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
        """Stochastic-depth rate of each of ``units`` residual units: 0 up to ``drop_path_rate``, linearly."""
        return [self.drop_path_rate * i / max(units - 1, 1) for i in range(units)]

    def _feature_info(self, channels: list[int], reductions: list[int]) -> list[dict]:
        """``feature_info``: one entry per stage, taken at the stage's last module."""
        return [
            dict(num_chs=c, reduction=r, module=names[-1])
            for c, r, names in zip(channels, reductions, self.stage_modules, strict=True)
        ]

    def _init_weights(self, module: nn.Module) -> None:
        """Initialises ``module``'s weights (the whole net, or a new output layer)."""

    def head_keys(self) -> dict[str, str]:
        """insightface's key prefix → ``head`` key prefix, for the output layer; empty without it."""
        return getattr(self.head, "insightface_keys", {})

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (not the stem's)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The output layer (``nn.Identity`` without it)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the output layer with a fresh one of width ``num_classes``.

        Args:
            num_classes: Output width; 0 removes the layer (``forward`` then average-pools).
            global_pool: Only ``None`` or ``"avg"``.
        """
        self._check_pool(global_pool)
        self.num_classes = num_classes
        if not num_classes:
            self.head = nn.Identity()
            return
        self.head = self.head_layer((self.num_features, *self.final_size), num_classes, self.drop_rate)
        self._init_weights(self.head)

    def _stages(self) -> list[list[nn.Module]]:
        """The modules of each stage; a ``Sequential`` is expanded so that checkpointing goes per block."""
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
        """The final feature map and the stage outputs of ``feature_info`` (timm's convention).

        Args:
            x: (B, 3, H, W) images.
            indices: Stages to return: the last n if an int, all if ``None``, else these (negative from the end).
            norm: Ignored: the face nets have no final norm layer.
            stop_early: Stop after the last stage asked for (the final map is then that stage's output).
            output_fmt: Only ``"NCHW"``.
            intermediates_only: Return only the intermediates.

        Returns:
            ``(features, intermediates)``, or ``intermediates`` alone: (B, C_i, H / r_i, W / r_i) maps in
            stage order, ``features`` as :meth:`forward_features` gives them.
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
        """Drops the stages after the last of ``indices`` (timm's convention), and the output layer.

        Args:
            indices: Stages to keep, as in :meth:`forward_intermediates`.
            prune_norm: Ignored: the face nets have no final norm layer.
            prune_head: Remove the output layer (it always goes when stages are dropped).

        Returns:
            The absolute indices of the stages kept for :meth:`forward_intermediates`.
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
        """(B, C, h, w) → (B, num_classes) through the output layer, or (B, C) average-pooled.

        The pooled features are returned when ``pre_logits`` is set or there is no output layer.
        """
        if pre_logits or not self.num_classes:
            return x.mean((2, 3))
        return self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, num_classes), or (B, num_features) when ``num_classes=0``."""
        return self.forward_head(self.forward_features(x))
