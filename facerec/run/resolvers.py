"""OmegaConf resolvers for ``conf/`` (registered on ``import facerec``): W&B mode, the monitored metric, and the
linear scaling rule that keeps a recipe's LR and schedule on another global batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from omegaconf import ListConfig, OmegaConf

OFFLINE_WANDB_MODES = ("", "offline", "dryrun")


def wandb_offline() -> bool:
    """Offline unless ``WANDB_MODE`` is another mode than unset/offline/dryrun (``online``, ``disabled``)."""
    return os.environ.get("WANDB_MODE", "").strip().lower() in OFFLINE_WANDB_MODES


def device_count(devices: int | str | Sequence[int]) -> int:
    """Devices a ``Trainer(devices=...)`` value names: ``4``, ``"4"``, ``[0, 1]`` or ``"0,1"``.

    Raises ValueError for ``"auto"``, ``-1`` or other machine-dependent values.
    """
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    if isinstance(devices, str):
        text = devices.strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
        ids = [part.strip() for part in text.split(",") if part.strip()]
        if "," in text and ids and all(part.isdigit() for part in ids):
            return len(ids)
    if isinstance(devices, list | tuple | ListConfig) and len(devices) > 0:
        return len(devices)
    raise ValueError(
        f"cannot compute the global batch from trainer.devices={devices!r}: set trainer.devices to a number "
        "of devices or a list of device ids, or set optimizer.lr (and the schedule) directly"
    )


def global_batch(batch_size: int, devices: int | str | Sequence[int], num_nodes: int = 1, accumulate: int = 1) -> int:
    """``${global_batch:BATCH,DEVICES,NODES,ACCUMULATE}``: samples per optimizer step, the product.

    Raises ValueError for a non-positive factor or a ``devices`` without fixed count.
    """
    for name, value in (("data.batch_size", batch_size), ("num_nodes", num_nodes), ("accumulate", accumulate)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer to compute the global batch, got {value!r}")
    return int(batch_size) * device_count(devices) * int(num_nodes) * int(accumulate)


def lr_for_batch(reference_lr: float, reference_batch: int, batch: int) -> float:
    """``${lr_for_batch:LR,REFERENCE_BATCH,GLOBAL_BATCH}``: ``LR × batch / reference_batch``."""
    return float(reference_lr) * int(batch) / int(reference_batch)


def steps_for_batch(steps: int, reference_batch: int, batch: int) -> int:
    """``${steps_for_batch:STEPS,REF_BATCH,BATCH}``: ``round(steps × ref / batch)`` (same samples seen)."""
    return round(int(steps) * int(reference_batch) / int(batch))


def first_set_accuracy(val_sets: Mapping[str, object] | None) -> str | None:
    """``val/<first set>/accuracy`` for ``monitor: ${first_set_accuracy:${data.val_sets}}``; None without sets."""
    return f"val/{next(iter(val_sets))}/accuracy" if val_sets else None


def register_resolvers() -> None:
    """Registers (idempotently) wandb_offline, global_batch, lr_for_batch, steps_for_batch, first_set_accuracy."""
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
    OmegaConf.register_new_resolver("global_batch", global_batch, replace=True)
    OmegaConf.register_new_resolver("lr_for_batch", lr_for_batch, replace=True)
    OmegaConf.register_new_resolver("steps_for_batch", steps_for_batch, replace=True)
    OmegaConf.register_new_resolver("first_set_accuracy", first_set_accuracy, replace=True)
