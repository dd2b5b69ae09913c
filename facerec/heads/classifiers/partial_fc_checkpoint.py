"""Partial FC checkpoints: one ordinary file from one process, shard files beside it from several.

A checkpoint written by W > 1 processes holds everything but the centres and their per-row optimizer state
(momentum, Adam moments); each rank writes its rows to ``<checkpoint>.centres/<save id>/rank<k>.pt``
(:func:`write_shard`) and the checkpoint's ``partial_fc`` entry names that folder. Any world size reads it
back: each rank memory-maps the shard files and copies only the rows it holds (:class:`ShardedRows`), so no
process ever holds more than its own rows. :func:`consolidate` turns a sharded checkpoint into one ordinary
file on the host. Shard files are read with ``weights_only=True``: tensors and plain values, never code.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from facerec.errors import CheckpointError
from facerec.heads.classifiers.sampled_rows import SampledRows, is_per_row

CHECKPOINT_KEY = "partial_fc"
"""Checkpoint entry: the centres' optimizer slot, whether rows were sampled, and where shard files lie."""
SHARD_KEY = "partial_fc_shard"
"""Entry a sharded classifier leaves for the strategy to write and remove (never written to the checkpoint)."""
SHARD_FORMAT = "facerec.partial_fc.shard.v1"
WEIGHT = "weight"
OPTIMIZER_PREFIX = "optimizer."


class ShardedCentres(Protocol):
    """What the checkpoint functions need of :class:`~facerec.heads.classifiers.partial_fc.PartialFC`."""

    weight: Tensor
    sampled: SampledRows | None
    world_size: int
    rank: int
    num_classes: int
    rows_per_class: int

    @property
    def row_range(self) -> tuple[int, int]:
        """``[start, end)`` of this shard's rows in the whole centre matrix."""


def shard_directory(checkpoint_path: str | Path) -> Path:
    """The folder holding the shard files of ``checkpoint_path`` (one sub-folder per save)."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.name}.centres")


def _optimizer_slot(optimizers: list[torch.optim.Optimizer], parameter: Tensor) -> tuple[int, int] | None:
    """(optimizer index, index in its state dict) of ``parameter``; None if not optimised."""
    for opt_index, optimizer in enumerate(optimizers):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for param_index, param in enumerate(params):
            if param is parameter:
                return opt_index, param_index
    return None


def _centre_state(checkpoint: dict) -> dict | None:
    """The centres' optimizer state entry of ``checkpoint`` (created empty), or None without an optimizer slot."""
    slot = checkpoint[CHECKPOINT_KEY]["optimizer_slot"]
    if slot is None or not checkpoint.get("optimizer_states"):
        return None
    return checkpoint["optimizer_states"][slot[0]]["state"].setdefault(slot[1], {})


def prepare_save(
    classifier: ShardedCentres, prefix: str, checkpoint: dict, optimizers: list[torch.optim.Optimizer]
) -> None:
    """Records the centres' optimizer slot; when sharded, moves this rank's rows to ``checkpoint[SHARD_KEY]``.

    One process: the checkpoint keeps every centre and its state (an ordinary file). W > 1: the centres and
    their per-row optimizer state leave the checkpoint; the strategy writes them with :func:`write_shard`.

    Args:
        classifier: The Partial FC classifier.
        prefix: Its state-dict prefix, e.g. ``"head.classifier."``.
        checkpoint: Lightning checkpoint dict, edited in place.
        optimizers: The trainer's optimizers, in ``optimizer_states`` order.
    """
    checkpoint[CHECKPOINT_KEY] = {
        "optimizer_slot": _optimizer_slot(optimizers, classifier.weight),
        "sampled_rows": classifier.sampled is not None,
        "weight_key": f"{prefix}{WEIGHT}",
    }
    if classifier.world_size == 1:
        return
    tensors = {WEIGHT: checkpoint["state_dict"].pop(f"{prefix}{WEIGHT}").detach()}
    state = _centre_state(checkpoint) or {}
    for name in [key for key, value in state.items() if is_per_row(value, len(classifier.weight))]:
        tensors[f"{OPTIMIZER_PREFIX}{name}"] = state.pop(name)
    start, end = classifier.row_range
    checkpoint[SHARD_KEY] = {
        "rank": classifier.rank,
        "world_size": classifier.world_size,
        "rows": classifier.num_classes * classifier.rows_per_class,
        "row_start": start,
        "row_end": end,
        "tensors": tensors,
    }


def write_shard(checkpoint: dict, checkpoint_path: str | Path, save_id: str) -> None:
    """Writes this rank's rows (``checkpoint[SHARD_KEY]``, removed) beside ``checkpoint_path``; records where.

    Every rank calls it with the same ``save_id`` before rank 0 writes the checkpoint file, so a checkpoint
    names only complete saves.
    """
    shard = checkpoint.pop(SHARD_KEY)
    folder = shard_directory(checkpoint_path) / save_id
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"format": SHARD_FORMAT, "save_id": save_id, **shard}, folder / f"rank{shard['rank']:05d}.pt")
    checkpoint[CHECKPOINT_KEY]["shards"] = {
        "folder": f"{folder.parent.name}/{save_id}",
        "save_id": save_id,
        "world_size": shard["world_size"],
        "rows": shard["rows"],
        "names": sorted(shard["tensors"]),
    }


def remove_stale_shards(checkpoint_path: str | Path, keep: str | None) -> None:
    """Deletes the shard folders of ``checkpoint_path`` other than ``keep`` (None: all of them)."""
    directory = shard_directory(checkpoint_path)
    if not directory.is_dir():
        return
    for folder in directory.iterdir():
        if folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)
    if keep is None:
        shutil.rmtree(directory, ignore_errors=True)


class ShardedRows:
    """Reads any row range of the per-row tensors of a sharded checkpoint, one shard file at a time.

    Args:
        checkpoint_path: The checkpoint file (its shards lie beside it).
        shards: Its ``partial_fc.shards`` entry.

    Raises:
        CheckpointError: A shard file is missing, unreadable, from another save, or the files do not cover
            every row exactly once.
    """

    def __init__(self, checkpoint_path: str | Path, shards: Mapping) -> None:
        self.folder = Path(checkpoint_path).resolve().parent / shards["folder"]
        self.rows = int(shards["rows"])
        self.names = list(shards["names"])
        self.files = [self.folder / f"rank{rank:05d}.pt" for rank in range(int(shards["world_size"]))]
        self.shards = [self._load(file) for file in self.files]  # memory-mapped: rows are read when copied
        self.ranges = []
        for file, shard in zip(self.files, self.shards, strict=True):
            if shard.get("format") != SHARD_FORMAT or shard.get("save_id") != shards["save_id"]:
                raise CheckpointError(
                    f"{file} belongs to another save than {checkpoint_path} (save {shards['save_id']}): the "
                    "checkpoint and its centres were mixed; use the files written together"
                )
            self.ranges.append((int(shard["row_start"]), int(shard["row_end"])))
        expected_start = 0
        for file, (start, end) in zip(self.files, self.ranges, strict=True):
            if start != expected_start or end < start:
                raise CheckpointError(f"{file} holds rows [{start}, {end}); expected rows from {expected_start}")
            expected_start = end
        if expected_start != self.rows:
            raise CheckpointError(f"the shards of {checkpoint_path} hold {expected_start} of {self.rows} centre rows")

    @staticmethod
    def _load(file: Path) -> dict:
        if not file.is_file():
            raise CheckpointError(
                f"{file} is missing: a checkpoint written by several processes keeps its class centres in "
                f"{file.parent}; copy that folder with the checkpoint"
            )
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:
            raise CheckpointError(f"{file} cannot be read as a centre shard: {str(error).splitlines()[0]}") from None

    def read(self, name: str, start: int, end: int) -> Tensor:
        """Rows ``[start, end)`` of tensor ``name`` (``"weight"`` or ``"optimizer.<state>"``), copied to memory
        (only those rows: the files stay memory-mapped)."""
        rows = None
        for shard, (low, high) in zip(self.shards, self.ranges, strict=True):
            if high <= start or low >= end:
                continue
            tensor = shard["tensors"][name]
            if rows is None:
                rows = tensor.new_empty((end - start, *tensor.shape[1:]))
            first, last = max(start, low), min(end, high)
            rows[first - start : last - start] = tensor[first - low : last - low]
        return rows


def _check_rows(found: int, classifier: ShardedCentres) -> None:
    expected = classifier.num_classes * classifier.rows_per_class
    if found != expected:
        raise ValueError(
            f"partial FC: the checkpoint holds {found} centre rows but this head needs {expected} "
            f"({classifier.num_classes} classes); resume with the training data and head it was trained with"
        )


def _check_sampling(checkpoint: dict, classifier: ShardedCentres) -> None:
    """ValueError unless the checkpoint's optimizer state fits this classifier (written by Partial FC, same r < 1)."""
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


def take_rows(classifier: ShardedCentres, prefix: str, checkpoint: dict, source: str | Path | None = None) -> None:
    """Puts this rank's centres and their optimizer state into ``checkpoint``, in place, before it is loaded.

    From an ordinary checkpoint: slices them. From a sharded one: reads only this rank's rows from the shard
    files beside ``source``, whatever world size wrote them.

    Raises:
        ValueError: Centre count differs from the classifier's, the optimizer state was not written by Partial FC
            with the same kind of sample rate (r < 1 vs r = 1), or a sharded checkpoint without ``source``.
        CheckpointError: Its shard files are missing, mixed or incomplete.
    """
    key = f"{prefix}{WEIGHT}"
    start, end = classifier.row_range
    if not is_sharded(checkpoint):
        full = checkpoint["state_dict"][key]
        _check_rows(full.shape[0], classifier)
        checkpoint["state_dict"][key] = full[start:end].clone()
        if not checkpoint.get("optimizer_states"):
            return
        _check_sampling(checkpoint, classifier)
        state = _centre_state(checkpoint) or {}
        for name in [name for name, value in state.items() if is_per_row(value, full.shape[0])]:
            state[name] = state[name][start:end].clone()
        return
    if source is None:
        raise ValueError("partial FC: a checkpoint written by several processes is read with its file path")
    shards = checkpoint[CHECKPOINT_KEY]["shards"]
    _check_rows(int(shards["rows"]), classifier)
    rows = ShardedRows(source, shards)
    checkpoint["state_dict"][key] = rows.read(WEIGHT, start, end)
    if not checkpoint.get("optimizer_states"):
        return
    _check_sampling(checkpoint, classifier)
    _read_optimizer_rows(rows, _centre_state(checkpoint), start, end)


def _read_optimizer_rows(rows: ShardedRows, state: dict | None, start: int, end: int) -> None:
    """Puts rows ``[start, end)`` of the shards' optimizer tensors into the centres' optimizer ``state``."""
    for name in rows.names:
        if name.startswith(OPTIMIZER_PREFIX) and state is not None:
            state[name.removeprefix(OPTIMIZER_PREFIX)] = rows.read(name, start, end)


def is_sharded(checkpoint: Mapping) -> bool:
    """Whether ``checkpoint`` keeps its centres in shard files beside it."""
    return isinstance(checkpoint.get(CHECKPOINT_KEY), Mapping) and "shards" in checkpoint[CHECKPOINT_KEY]


def consolidate(checkpoint: dict, source: str | Path) -> None:
    """Puts the sharded centres of ``checkpoint`` (read from ``source``) and their optimizer state back in it.

    Edits ``checkpoint`` in place into what one process would have written: an ordinary checkpoint, resumable
    at any world size. Holds the whole centre matrix in host memory (read one shard at a time).

    Raises:
        ValueError: ``checkpoint`` is not sharded.
        CheckpointError: Its shard files are missing, mixed or incomplete.
    """
    if not is_sharded(checkpoint):
        raise ValueError(f"{source} holds its class centres already (it was written by one process)")
    meta = checkpoint[CHECKPOINT_KEY]
    rows = ShardedRows(source, meta.pop("shards"))
    checkpoint["state_dict"][meta["weight_key"]] = rows.read(WEIGHT, 0, rows.rows)
    _read_optimizer_rows(rows, _centre_state(checkpoint), 0, rows.rows)
