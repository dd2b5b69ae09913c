"""``eval.py``'s options, parsed and checked before any evaluation, and the impostor pairs a FAR needs."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from facerec.data.verification.sets import VerificationSet
from facerec.eval.verification import MIN_FALSE_ACCEPTS, needed_impostors
from facerec.inference import sidecar_path
from facerec.run.outputs import check_distinct, check_output_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """Checked ``eval.py`` options: ``far`` (``threshold_at_far`` in (0, 1) or None), ``threshold_set`` (None: the
    first set), ``allow_few_impostors``, ``onnx`` (``export.onnx`` or None).
    """

    far: float | None
    threshold_set: str | None
    allow_few_impostors: bool
    onnx: Path | None


def _count(number: int) -> str:
    return str(number) if number < 10**9 else f"{float(number):.3g}"


def _flag(cfg: DictConfig, key: str) -> bool:
    value = cfg.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r}: expected true or false")
    return value


def parse_far(value: Any) -> float | None:
    """``threshold_at_far`` as a float in (0, 1), None if unset; ValueError otherwise."""
    if value is None:
        return None
    try:
        far = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        far = math.nan
    if not 0 < far < 1:
        raise ValueError(f"threshold_at_far={value!r}: expected a false accept rate in (0, 1), e.g. 1e-3")
    return far


def parse_eval_options(cfg: DictConfig) -> EvalOptions:
    """Parses every ``eval.py`` option and checks the outputs before any evaluation.

    ``metrics_file``, ``export.onnx`` and its ``.json`` sidecar must be distinct writable files, new unless
    ``overwrite=true``.

    Raises:
        ValueError: A malformed option (named), or two outputs naming one file.
        OSError: An output that cannot be written, is a directory, or exists without ``overwrite=true``.
    """
    for key in ("flip_test", "overwrite"):
        _flag(cfg, key)
    far = parse_far(cfg.get("threshold_at_far"))
    threshold_set = cfg.get("threshold_set")
    if threshold_set is not None and not isinstance(threshold_set, str):
        raise ValueError(f"threshold_set={threshold_set!r}: expected the name of a verification set")
    export = cfg.get("export") or {}
    opset = export.get("opset", 17)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 7:
        raise ValueError(f"export.opset={opset!r}: expected an ONNX opset version (an integer, e.g. 17)")
    onnx = Path(export["onnx"]) if export.get("onnx") else None
    outputs = [("metrics_file", Path(cfg.metrics_file))] if cfg.get("metrics_file") else []
    if onnx is not None:
        outputs += [("export.onnx", onnx), ("export.onnx's sidecar", sidecar_path(onnx))]
    check_distinct(outputs)
    for option, path in outputs:
        check_output_file(path, _flag(cfg, "overwrite"), option, "overwrite=true")
    return EvalOptions(far, threshold_set, _flag(cfg, "allow_few_impostors"), onnx)


def impostor_pairs(val_sets: Iterable[VerificationSet]) -> dict[str, int]:
    """``{set name: number of different-identity pairs}``."""
    return {val_set.name: int(np.count_nonzero(~np.asarray(val_set.issame, dtype=bool))) for val_set in val_sets}


def check_threshold_set(options: EvalOptions, impostors: Mapping[str, int]) -> str:
    """Name of the set to choose the ``threshold_at_far`` threshold on (``threshold_set`` or the first).

    Raises:
        ValueError: No set, an unknown ``threshold_set``, or fewer than ``ceil(10 / far)`` impostor pairs
            (with ``allow_few_impostors=true``: fewer than ``1 / far``).
    """
    if not impostors:
        raise ValueError("threshold_at_far needs a verification set (data.val_sets.<name>) to choose the threshold on")
    name = options.threshold_set or next(iter(impostors))
    if name not in impostors:
        raise ValueError(f"threshold_set={name}: no such verification set; choose one of {', '.join(impostors)}")
    count, needed, far = impostors[name], needed_impostors(options.far), options.far
    if count >= needed:
        return name
    if not options.allow_few_impostors:
        smallest = f"threshold_at_far >= {MIN_FALSE_ACCEPTS / count:.2g} or " if count else ""
        raise ValueError(
            f"threshold_at_far={far:g} needs at least {_count(needed)} impostor (different-identity) pairs, "
            f"ceil(10/FAR), and verification set {name!r} has {count}: choose {smallest}a larger set, or set "
            "allow_few_impostors=true to choose it on these pairs anyway"
        )
    if count * far < 1:
        raise ValueError(
            f"threshold_at_far={far:g} cannot be measured on the {count} impostor pairs of {name!r}, not even with "
            f"allow_few_impostors=true: it needs at least 1/FAR = {_count(math.ceil(1 / far - 1e-9))}"
        )
    log.warning(
        "threshold_at_far=%g chosen on %d impostor pairs of %r (allow_few_impostors=true): %d are needed for a "
        "reliable estimate",
        far,
        count,
        name,
        needed,
    )
    return name
