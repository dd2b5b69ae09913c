"""Backbones by timm name."""

from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

from facerec.models.checkpoint import load_backbone_weights
from facerec.models.pretrained import cached_weights


def similar_names(name: str, known: set[str], limit: int = 5) -> list[str]:
    """Up to ``limit`` names from ``known``: shortest extensions of ``name``, then difflib's closest."""
    extensions = sorted((n for n in known if n.startswith(name)), key=lambda n: (len(n), n))
    close = difflib.get_close_matches(name, sorted(known), n=limit)
    return list(dict.fromkeys([*extensions[:limit], *close]))[:limit]


WEIGHT_SOURCES = {"checkpoint_path": None, "pretrained": False}
"""Backbone options that load weights at build, and the (off) values a checkpoint must hold."""


def check_backbone_name(name: str) -> None:
    """Raises ValueError, suggesting close names, unless ``name`` is a timm model or pretrained tag."""
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
        pretrained: Load timm's pretrained weights from the local cache only
            (:func:`facerec.models.pretrained.cached_weights`); no network access.
        drop_path_rate: Stochastic-depth rate, passed only when non-zero (not every model takes it).
        grad_checkpointing, channels_last: Gradient checkpointing; channels-last memory format.
        checkpoint_path: Backbone weights (insightface ``backbone.pth``, facerec or timm state dict);
            output-layer keys skipped. (:func:`facerec.models.build_embedding_net` loads backbone + neck.)
        **kwargs: Passed to ``timm.create_model`` (e.g. ``img_size=112`` for ViTs).

    Returns:
        A timm model: ``forward_features(x)`` gives the feature map, ``forward_head(f, pre_logits=True)``
        the pooled (B, num_features) features.

    Raises:
        ValueError: ``name`` is not a timm model.
        RuntimeError: Pretrained weights not cached, or ``checkpoint_path`` keys do not match.
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
