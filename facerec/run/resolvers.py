"""OmegaConf resolvers used by ``conf/``; registered when :mod:`facerec` is imported.

``${first_set_accuracy:${data.val_sets}}`` is the accuracy on the first verification set (what presets
monitor). Besides it and ``${wandb_offline:}``, three resolvers let a published recipe (``conf/experiment/``) keep
its learning rate and schedule when it runs on another global batch (the linear scaling rule):

- ``${global_batch:BATCH,DEVICES,NODES,ACCUMULATE}``: per-process batch × devices × nodes ×
  gradient-accumulation steps, e.g. ``${global_batch:${data.batch_size},${trainer.devices},
  ${trainer.num_nodes},${trainer.accumulate_grad_batches}}``;
- ``${lr_for_batch:REFERENCE_LR,REFERENCE_BATCH,GLOBAL_BATCH}``: the LR scaled linearly with the
  global batch;
- ``${steps_for_batch:STEPS,REFERENCE_BATCH,GLOBAL_BATCH}``: a step count of the reference run scaled
  inversely, so the run sees the same number of samples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from omegaconf import ListConfig, OmegaConf

OFFLINE_WANDB_MODES = ("", "offline", "dryrun")


def wandb_offline() -> bool:
    """Whether W&B should log offline: yes unless ``WANDB_MODE`` asks for another mode.

    ``WANDB_MODE=online`` (W&B's documented switch) goes online, ``disabled`` turns W&B off;
    unset, ``offline`` or ``dryrun`` keep the run offline, so W&B never prompts for an account.
    """
    return os.environ.get("WANDB_MODE", "").strip().lower() in OFFLINE_WANDB_MODES


def device_count(devices: int | str | Sequence[int]) -> int:
    """The number of devices a Lightning ``Trainer(devices=...)`` value names.

    Args:
        devices: A positive count (``4`` or ``"4"``), a list of device ids (``[0, 1]``) or a
            comma-separated id string (``"0,1"``, ``"1,"``).

    Raises:
        ValueError: For ``"auto"``, ``-1`` or anything else whose count depends on the machine.
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
    """Samples per optimizer step over all processes: batch × devices × nodes × accumulation steps.

    Raises:
        ValueError: If a factor is not positive, or ``devices`` names no fixed count (see :func:`device_count`).
    """
    for name, value in (("data.batch_size", batch_size), ("num_nodes", num_nodes), ("accumulate", accumulate)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer to compute the global batch, got {value!r}")
    return int(batch_size) * device_count(devices) * int(num_nodes) * int(accumulate)


def lr_for_batch(reference_lr: float, reference_batch: int, batch: int) -> float:
    """The linear scaling rule: ``reference_lr × batch / reference_batch``."""
    return float(reference_lr) * int(batch) / int(reference_batch)


def steps_for_batch(steps: int, reference_batch: int, batch: int) -> int:
    """Steps of a run at ``reference_batch`` rescaled to ``batch``: ``round(steps × reference_batch / batch)``.

    Keeps the number of training samples (the epochs) of a schedule given in iterations.
    """
    return round(int(steps) * int(reference_batch) / int(batch))


def first_set_accuracy(val_sets: Mapping[str, object] | None) -> str | None:
    """``val/<first verification set>/accuracy``, the metric a preset monitors; None without sets.

    ``monitor: ${first_set_accuracy:${data.val_sets}}`` follows the sets a user configures, so a preset
    never monitors a set that is not there.
    """
    return f"val/{next(iter(val_sets))}/accuracy" if val_sets else None


def register_resolvers() -> None:
    """Registers ``${wandb_offline:}``, ``${global_batch:...}``, ``${lr_for_batch:...}`` and ``${steps_for_batch:...}``.

    Idempotent.
    """
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
    OmegaConf.register_new_resolver("global_batch", global_batch, replace=True)
    OmegaConf.register_new_resolver("lr_for_batch", lr_for_batch, replace=True)
    OmegaConf.register_new_resolver("steps_for_batch", steps_for_batch, replace=True)
    OmegaConf.register_new_resolver("first_set_accuracy", first_set_accuracy, replace=True)
