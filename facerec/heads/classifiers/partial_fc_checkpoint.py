"""Partial FC checkpoints: centres and their optimizer state stored unsharded (resumable at any world size)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from torch import Tensor

from facerec.heads.classifiers.sampled_rows import SampledRows, is_per_row

CHECKPOINT_KEY = "partial_fc"
"""Checkpoint entry recording the centres' optimizer slot and whether rows were sampled."""


class ShardedCentres(Protocol):
    """What the checkpoint functions need of :class:`~facerec.heads.classifiers.partial_fc.PartialFC`."""

    weight: Tensor
    sampled: SampledRows | None

    def full_rows(self, shard: Tensor) -> Tensor:
        """All ranks' slices of a per-row tensor, in class order (collective)."""

    def local_rows(self, full: Tensor) -> Tensor:
        """This rank's slice of a full per-row tensor."""


def _optimizer_slot(optimizers: list[torch.optim.Optimizer], parameter: Tensor) -> tuple[int, int] | None:
    """(optimizer index, index in its state dict) of ``parameter``; None if not optimised."""
    for opt_index, optimizer in enumerate(optimizers):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for param_index, param in enumerate(params):
            if param is parameter:
                return opt_index, param_index
    return None


def _per_row_state(state: Mapping, rows: int) -> list[str]:
    """Keys of an optimizer state entry with one row per centre row (momentum, Adam moments)."""
    return [key for key, value in state.items() if is_per_row(value, rows)]


def consolidate_checkpoint(
    classifier: ShardedCentres, prefix: str, checkpoint: dict, optimizers: list[torch.optim.Optimizer]
) -> None:
    """Replaces the centre shard and its optimizer state in ``checkpoint`` by the full (C·K, E) ones.

    Collective (Lightning dumps on all ranks, writes rank 0's).

    Args:
        classifier: The Partial FC classifier.
        prefix: Its state-dict prefix, e.g. ``"head.classifier."``.
        checkpoint: Lightning checkpoint dict, edited in place.
        optimizers: The trainer's optimizers, in ``optimizer_states`` order.
    """
    key = f"{prefix}weight"
    rows = classifier.weight.shape[0]
    checkpoint["state_dict"][key] = classifier.full_rows(checkpoint["state_dict"][key])
    slot = _optimizer_slot(optimizers, classifier.weight)
    checkpoint[CHECKPOINT_KEY] = {"optimizer_slot": slot, "sampled_rows": classifier.sampled is not None}
    if slot is None or not checkpoint.get("optimizer_states"):
        return
    state = checkpoint["optimizer_states"][slot[0]]["state"].get(slot[1], {})
    for name in _per_row_state(state, rows):
        state[name] = classifier.full_rows(state[name])


def shard_checkpoint(classifier: ShardedCentres, prefix: str, checkpoint: dict) -> None:
    """Slices a consolidated checkpoint's centres and optimizer state for this rank, in place.

    Raises:
        ValueError: Centre count differs from the classifier's, or the checkpoint has optimizer state
            but was not written by Partial FC with the same kind of sample rate (r < 1 vs r = 1).
    """
    key = f"{prefix}weight"
    full = checkpoint["state_dict"][key]
    checkpoint["state_dict"][key] = classifier.local_rows(full)
    if not checkpoint.get("optimizer_states"):
        return
    if CHECKPOINT_KEY not in checkpoint:
        raise ValueError(
            "partial FC: this checkpoint was written without partial FC, so its optimizer state does not "
            "fit the sharded centres; resume it with classifier=full, or start a new run from its weights"
        )
    sampled = checkpoint[CHECKPOINT_KEY].get("sampled_rows", False)
    if sampled != (classifier.sampled is not None):
        written = "below 1" if sampled else "1 (or by a facerec whose Partial FC gave every centre a gradient)"
        raise ValueError(
            f"partial FC: this checkpoint was written with classifier.sample_rate {written}; its optimizer "
            f"state has {'a' if sampled else 'no'} slot for the sampled centres. Resume it with "
            f"classifier.sample_rate {'below 1' if sampled else '1.0'}, or start a new run from its weights"
        )
    slot = checkpoint[CHECKPOINT_KEY]["optimizer_slot"]
    if slot is None:
        return
    state = checkpoint["optimizer_states"][slot[0]]["state"].get(slot[1], {})
    for name in _per_row_state(state, len(full)):
        state[name] = classifier.local_rows(state[name])
