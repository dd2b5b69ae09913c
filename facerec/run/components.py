"""Building a run's Lightning parts from config groups, and reading back the verification metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from facerec.callbacks import VerificationCallback
from facerec.eval.metric import METRIC_KEYS


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiates every entry of a ``name: {_target_: ...}`` group (None -> [])."""
    return [instantiate(entry) for entry in (group or {}).values() if entry is not None]


def verification_callback(trainer: L.Trainer) -> VerificationCallback:
    """The trainer's VerificationCallback; ValueError if none."""
    for callback in trainer.callbacks:
        if isinstance(callback, VerificationCallback):
            return callback
    raise ValueError("no VerificationCallback configured: add callbacks.verification")


def logged_results(
    logged: Mapping[str, Any] | Iterable[Mapping[str, Any]], names: Iterable[str]
) -> dict[str, dict[str, float]]:
    """``{set: {METRIC_KEYS key: value}}`` from ``val/<set>/<key>`` (``trainer.validate`` or callback_metrics)."""
    values = dict(logged) if isinstance(logged, Mapping) else {k: v for outputs in logged for k, v in outputs.items()}
    return {name: {key: float(values[f"val/{name}/{key}"]) for key in METRIC_KEYS} for name in names}
