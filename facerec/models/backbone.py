"""Backbones by timm name."""

from __future__ import annotations

import timm
import torch
from torch import nn


def create_backbone(
    name: str,
    pretrained: bool = False,
    drop_path_rate: float = 0.0,
    grad_checkpointing: bool = False,
    channels_last: bool = False,
    **kwargs,
) -> nn.Module:
    """Builds a timm model without its classifier (``num_classes=0``).

    Args:
        name: Any name ``timm.list_models()`` knows, including facerec's face nets.
        pretrained: Load timm's pretrained weights (they must already be in the local cache).
        drop_path_rate: Stochastic-depth rate, passed only when non-zero (not every model takes it).
        grad_checkpointing: Trade compute for memory in the backbone.
        channels_last: Store the weights in channels-last memory format.
        **kwargs: Passed to ``timm.create_model`` (e.g. ``img_size=112`` for ViTs).

    Returns:
        A timm model: ``forward_features(x)`` gives the feature map, ``forward_head(f,
        pre_logits=True)`` the pooled features of width ``num_features``.
    """
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        raise ValueError(
            f"unknown backbone {name!r}: not in timm's registry. "
            'List the choices with `python -c "import facerec, timm; print(timm.list_models())"`.'
        )
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
