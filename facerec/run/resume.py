"""What a resumed run must share with its checkpoint (identities, data, model), compared with the config every
checkpoint stores (:class:`~facerec.callbacks.RunConfigRecord`) before training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facerec.callbacks.run_config import RUN_CONFIG_KEY
from facerec.errors import class_count_error

log = logging.getLogger(__name__)

# Sections that define what a checkpoint was trained with: a resume must not change them ...
TRAINED_WITH = ("data", "model")
# ... except these, which change how, not what, it is trained and evaluated.
FREE_ON_RESUME = (
    "data.num_workers",
    "data.persistent_workers",
    "data.prefetch_factor",
    "data.pin_memory",
    "data.eval_batch_size",
    "data.skip_corrupt",
    "model.compile",
    "model.flip_test",
)
# Restored from the checkpoint's optimizer and scheduler states, so a new value is ignored.
RESTORED_ON_RESUME = ("model.optimizer", "model.scheduler")


def config_changes(before: Mapping, after: Mapping, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two nested configs (missing reads as None).

    Example:
        >>> config_changes({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4})
        {'a.c': (2, 3), 'd': (None, 4)}
    """
    changes: dict[str, tuple[Any, Any]] = {}
    for key in dict.fromkeys([*before, *after]):
        name, old, new = f"{prefix}{key}", before.get(key), after.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes.update(config_changes(old, new, f"{name}."))
        elif old != new:
            changes[name] = (old, new)
    return changes


def _under(name: str, sections: tuple[str, ...]) -> bool:
    return any(name == section or name.startswith(f"{section}.") for section in sections)


def check_resumed_config(checkpoint: Mapping, config: Mapping, ckpt_path: str | Path, force: bool = False) -> None:
    """Refuses a resume whose ``data``/``model`` config differs from the checkpoint's stored one.

    :data:`FREE_ON_RESUME` keys may change; :data:`RESTORED_ON_RESUME` changes are ignored with a warning;
    a checkpoint without a stored config is not checked.

    Args:
        checkpoint: The loaded training checkpoint.
        config: This run's resolved config.
        ckpt_path: For messages.
        force: Resume anyway, logging the changes.

    Raises:
        ValueError: Listing each changed key with both values.
    """
    trained = checkpoint.get(RUN_CONFIG_KEY)
    if trained is None:
        log.info("%s does not record its training config: resume not compared with it", ckpt_path)
        return
    changes = config_changes(
        {section: trained.get(section) or {} for section in TRAINED_WITH},
        {section: config.get(section) or {} for section in TRAINED_WITH},
    )
    ignored = {name: change for name, change in changes.items() if _under(name, RESTORED_ON_RESUME)}
    refused = {
        name: change for name, change in changes.items() if not _under(name, (*RESTORED_ON_RESUME, *FREE_ON_RESUME))
    }
    for name, (old, new) in ignored.items():
        log.warning(
            "%s=%r differs from the checkpoint's %r and is ignored: a resume restores the optimizer and "
            "scheduler states (learning rate included) from the checkpoint",
            name,
            new,
            old,
        )
    if not refused:
        return
    listed = "; ".join(f"{name}: {old!r} in the checkpoint, {new!r} now" for name, (old, new) in refused.items())
    if force:
        log.warning("resuming %s with a changed config (force_resume=true): %s", ckpt_path, listed)
        return
    raise ValueError(
        f"resume would continue {ckpt_path} with other data or another model than it was trained with: {listed}. "
        "Repeat the original run's overrides (its .hydra/overrides.yaml), or set force_resume=true if the "
        "change is intended (e.g. the data moved)"
    )


def check_resumed_classes(checkpoint: Mapping, class_names: list[str], ckpt_path: str | Path) -> None:
    """Refuses to resume on other identity names or count than the checkpoint's (labels index the sorted names).

    Raises:
        ValueError: Naming both counts, or up to five changed labels.
    """
    saved = (checkpoint.get("hyper_parameters") or {}).get("class_names")
    if saved is None or list(saved) == list(class_names):
        return
    if len(saved) != len(class_names):
        raise class_count_error(len(saved), len(class_names))
    changed = [(i, old, new) for i, (old, new) in enumerate(zip(saved, class_names, strict=True)) if old != new][:5]
    count = sum(old != new for old, new in zip(saved, class_names, strict=True))
    listed = "; ".join(f"label {label}: {old!r} in the checkpoint, {new!r} in the data" for label, old, new in changed)
    raise ValueError(
        f"{ckpt_path} was trained on other identities than data.root holds ({count} of {len(saved)} labels "
        f"differ: {listed}): resume on the same data, or fine-tune a new head from its embedding network"
    )
