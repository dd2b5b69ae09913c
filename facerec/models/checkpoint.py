"""Reading backbone weights (insightface ``backbone.pth``, state dicts) and training checkpoints."""

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
    """Maps insightface keys to :class:`facerec.models.EmbeddingNet` keys; facerec-layout dicts pass unchanged.

    Keys under a ``neck_keys`` prefix (the neck's ``insightface_keys``, e.g. ``bn2.`` → ``bn.``) go to
    ``neck.``, the rest to ``backbone.``.
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
    """``load_state_dict``; RuntimeError listing every missing and unexpected key."""
    result = module.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {source} does not match {type(module).__name__}:\n"
            f"  missing keys: {result.missing_keys}\n  unexpected keys: {result.unexpected_keys}"
        )


def load_embedding_net_weights(net: nn.Module, path: str | Path) -> None:
    """Loads an insightface ``backbone.pth`` or facerec state dict into an ``EmbeddingNet``; keys must match exactly."""
    state_dict = to_facerec_layout(read_state_dict(path), getattr(net.neck, "insightface_keys", {}))
    load_strict(net, state_dict, path)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Loads an insightface, facerec or timm checkpoint's backbone keys into ``backbone`` (timm, ``num_classes=0``).

    Other keys (output layer, neck) are skipped; a missing backbone key raises RuntimeError.
    """
    state_dict = read_state_dict(path)
    if all(key.startswith(FACEREC_PREFIXES) for key in state_dict):
        state_dict = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    own = backbone.state_dict()
    load_strict(backbone, {key: value for key, value in state_dict.items() if key in own}, path)


class CheckpointError(ValueError):
    """A file facerec cannot read as a checkpoint; the message says what it is."""


def read_training_checkpoint(path: str | Path) -> dict:
    """Reads a facerec training checkpoint memory-mapped with ``weights_only=True`` (never unpickles code).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CheckpointError: Not a zip archive, truncated, holds non-tensor objects, a bare state dict (the
            message suggests ``backbone.checkpoint_path``), or hyper-parameters naming anything but
            facerec's parts (:mod:`facerec.models.allowlist`).
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
