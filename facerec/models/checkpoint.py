"""Reading checkpoints: backbone weights (insightface ``backbone.pth``, state dicts) and training checkpoints."""

from __future__ import annotations

import pickle
import zipfile
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


class CheckpointError(ValueError):
    """A file given as a checkpoint that is not one facerec can read; the message says what it is."""


def read_training_checkpoint(path: str | Path) -> dict:
    """Reads a facerec (Lightning) training checkpoint safely, memory-mapped, to check what it is.

    Never unpickles code (``weights_only=True``) and never suggests doing so; the hyper-parameters the
    model is rebuilt from must name only facerec's own parts (:mod:`facerec.models.allowlist`).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        CheckpointError: If the file is not a zip archive (a text file, a legacy ``torch.save``), is
            truncated, holds objects other than tensors and plain values, is a bare state dict
            (the message says to pass those weights as ``backbone.checkpoint_path``), or its
            hyper-parameters name anything else than facerec's parts (the message names the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with path.open("rb") as file:
        head = file.read(4)
    if head != b"PK\x03\x04":
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (a .ckpt is a zip archive; this file starts {head!r})"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is truncated or corrupt (its zip directory is missing): copy it again")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and plain values, so facerec does not load it "
            "(unpickling them could run code); facerec's own checkpoints never do"
        ) from None
    except RuntimeError as error:
        raise CheckpointError(f"{path} cannot be read as a checkpoint: {str(error).splitlines()[0]}") from None
    if isinstance(checkpoint, Mapping) and "pytorch-lightning_version" in checkpoint:
        from facerec.models.allowlist import check_hyperparameters  # not at the top: it imports this module

        check_hyperparameters(checkpoint, path)
        return dict(checkpoint)
    if isinstance(checkpoint, Mapping) and checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise CheckpointError(
            f"{path} is a bare state dict ({len(checkpoint)} tensors), not a facerec training checkpoint "
            "(which also holds the config, class names and training state); to start from these weights, "
            f"pass them as backbone.checkpoint_path={path} (an embedding network's or insightface's backbone.pth)"
        )
    raise CheckpointError(
        f"{path} is not a facerec training checkpoint (no pytorch-lightning_version; it holds a "
        f"{type(checkpoint).__name__}): give a .ckpt written by train.py"
    )
