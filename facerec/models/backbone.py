"""Backbones by timm name."""

from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

from facerec.models.checkpoint import load_backbone_weights
from facerec.models.pretrained import cached_weights


def similar_names(name: str, known: set[str], limit: int = 5) -> list[str]:
    """Up to ``limit`` names of ``known`` close to ``name``: the shortest that extend it, then difflib's closest."""
    extensions = sorted((n for n in known if n.startswith(name)), key=lambda n: (len(n), n))
    close = difflib.get_close_matches(name, sorted(known), n=limit)
    return list(dict.fromkeys([*extensions[:limit], *close]))[:limit]


WEIGHT_SOURCES = {"checkpoint_path": None, "pretrained": False}
"""Backbone options that load weights at build, and their values in a checkpoint's hyperparameters."""


def check_backbone_name(name: str) -> None:
    """Refuses a name that is not a timm model (architecture or pretrained tag), suggesting close ones.

    Raises:
        ValueError: If ``name`` is not in timm's registry (facerec's face nets included).
    """
    architectures, tagged = set(timm.list_models()), set(timm.list_models(pretrained=True))
    if name not in architectures | tagged:
        close = similar_names(name, tagged if "." in name else architectures)
        hint = f"did you mean: {', '.join(close)}? " if close else ""
        raise ValueError(
            f"unknown backbone {name!r}: not in timm's registry; {hint}"
            'list the choices with `python -c "import facerec, timm; print(timm.list_models())"`.'
        )


def create_backbone(
    name: str,
    pretrained: bool = False,
    drop_path_rate: float = 0.0,
    grad_checkpointing: bool = False,
    channels_last: bool = False,
    checkpoint_path: str | None = None,
    **kwargs,
) -> nn.Module:
    """Builds a timm model without its classifier (``num_classes=0``).

    Args:
        name: Any name ``timm.list_models()`` knows, including facerec's face nets.
        pretrained: Load timm's pretrained weights. They must already be in the local cache (see
            :func:`facerec.models.pretrained.cached_weights`); the network is never tried.
        drop_path_rate: Stochastic-depth rate, passed only when non-zero (not every model takes it).
        grad_checkpointing: Trade compute for memory in the backbone.
        channels_last: Store the weights in channels-last memory format.
        checkpoint_path: Backbone weights to load (insightface ``backbone.pth``, facerec or timm state
            dict); output-layer keys are skipped. :func:`facerec.models.build_embedding_net` instead
            loads it into backbone and neck together.
        **kwargs: Passed to ``timm.create_model`` (e.g. ``img_size=112`` for ViTs).

    Returns:
        A timm model: ``forward_features(x)`` gives the feature map, ``forward_head(f,
        pre_logits=True)`` the pooled features of width ``num_features``.
    """
    check_backbone_name(name)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if pretrained:
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        kwargs["pretrained_cfg_overlay"] = {**overlay, "file": cached_weights(name)}
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    if checkpoint_path:
        load_backbone_weights(model, checkpoint_path)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
