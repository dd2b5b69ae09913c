"""Loading weights into the embedding network: insightface ``backbone.pth``, timm and facerec state dicts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

FACEREC_PREFIXES = ("backbone.", "neck.")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Reads a state dict saved with ``torch.save`` (tensors only), dropping a DDP ``module.`` prefix."""
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def to_facerec_layout(state_dict: Mapping[str, Tensor], neck_keys: Mapping[str, str]) -> dict[str, Tensor]:
    """Maps an insightface state dict onto :class:`facerec.models.EmbeddingNet` keys.

    insightface's output layer goes to the neck through ``neck_keys`` (insightface prefix → neck
    prefix, e.g. ``bn2.`` → ``bn.``); every other key goes to ``backbone.`` unchanged. A state dict that
    is already in facerec layout (all keys under ``backbone.`` / ``neck.``) is returned as is.

    Args:
        state_dict: insightface or facerec keys.
        neck_keys: The neck's ``insightface_keys``.
    """
    if all(key.startswith(FACEREC_PREFIXES) for key in state_dict):
        return dict(state_dict)
    mapped = {}
    for key, value in state_dict.items():
        prefix = next((p for p in neck_keys if key.startswith(p)), None)
        if prefix is None:
            mapped[f"backbone.{key}"] = value
        else:
            mapped[f"neck.{neck_keys[prefix]}{key.removeprefix(prefix)}"] = value
    return mapped


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str | Path) -> None:
    """``load_state_dict`` whose error lists every missing and unexpected key."""
    result = module.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {source} does not match {type(module).__name__}:\n"
            f"  missing keys: {result.missing_keys}\n  unexpected keys: {result.unexpected_keys}"
        )


def load_embedding_net_weights(net: nn.Module, path: str | Path) -> None:
    """Loads an insightface ``backbone.pth`` or a facerec ``EmbeddingNet`` state dict into ``net``.

    Args:
        net: An :class:`facerec.models.EmbeddingNet`.
        path: The checkpoint file.

    Raises:
        RuntimeError: The keys do not match exactly (the message lists the differences), or shapes differ.
    """
    state_dict = to_facerec_layout(read_state_dict(path), getattr(net.neck, "insightface_keys", {}))
    load_strict(net, state_dict, path)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Loads the backbone part of an insightface, facerec or plain timm checkpoint into ``backbone``.

    Keys of insightface's output layer (and of a facerec neck) are skipped; every backbone key must be
    present.

    Args:
        backbone: A timm model built with ``num_classes=0``.
        path: The checkpoint file.
    """
    state_dict = read_state_dict(path)
    if all(key.startswith(FACEREC_PREFIXES) for key in state_dict):
        state_dict = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    own = backbone.state_dict()
    load_strict(backbone, {key: value for key, value in state_dict.items() if key in own}, path)
