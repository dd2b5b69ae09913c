"""Reading a training checkpoint safely: tensors and plain values only, hyper-parameters checked."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from facerec.errors import CheckpointError
from facerec.module.allowlist import check_hyperparameters


def read_training_checkpoint(path: str | Path) -> dict:
    """Loads a facerec training checkpoint safely (``weights_only=True``, memory-mapped) and checks it.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CheckpointError: Not a zip archive, truncated, holds non-tensor objects, a bare state dict (message:
            use ``backbone.checkpoint_path``), or hyper-parameters outside :mod:`facerec.module.allowlist`.
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
