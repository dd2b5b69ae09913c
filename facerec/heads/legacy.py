"""Head configs and weights of checkpoints written before heads were composed (facerec ≤ 0.x, one class per head).

:func:`upgrade_config` turns an old ``hyper_parameters.head`` into today's composed config and
:func:`upgrade_state` renames the old weights, so ``eval.py``, ``facerec.load_model`` and fine-tuning from
an old checkpoint keep working; this module is the only place that knows the old layouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

LEGACY_FACTORY = "facerec.heads.create_head"
"""``_target_`` of the oldest head configs (with a ``name`` key)."""
OLD_HEADS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "softmax": ("SoftmaxHead", "softmax", ("bias",)),
    "center": ("CenterHead", "softmax", ("bias",)),
    "cosface": ("CosFaceHead", "cosface", ("scale", "margin")),
    "arcface": ("ArcFaceHead", "arcface", ("scale", "margin", "easy_margin")),
    "arcface_center": ("ArcFaceCenterHead", "arcface", ("scale", "margin", "easy_margin")),
    "subcenter_arcface": ("SubCenterArcFaceHead", "arcface", ("scale", "margin", "easy_margin")),
    "combined": ("CombinedMarginHead", "combined", ("scale", "m1", "m2", "m3")),
    "adaface": ("AdaFaceHead", "adaface", ("scale", "margin", "h", "momentum", "eps")),
}
"""Old head name → (old class name, today's margin, the old parameters that are the margin's)."""
OLD_MODULES = {
    "SoftmaxHead": "softmax",
    "CenterHead": "center",
    "CosFaceHead": "cosface",
    "ArcFaceHead": "arcface",
    "ArcFaceCenterHead": "arcface_center",
    "SubCenterArcFaceHead": "subcenter_arcface",
    "CombinedMarginHead": "combined",
    "AdaFaceHead": "adaface",
}
"""Old class name → the module that defined it (``facerec.heads.<module>.<class>``)."""
CENTER_KEYS = {"center_weight": "weight", "alpha": "alpha", "update": "update", "center_lr": "center_lr"}
"""Old center-loss parameter → today's ``CenterLoss`` parameter."""
MARGIN_TARGETS = {
    "softmax": "facerec.heads.Softmax",
    "cosface": "facerec.heads.CosFace",
    "arcface": "facerec.heads.ArcFace",
    "combined": "facerec.heads.CombinedMargin",
    "adaface": "facerec.heads.AdaFace",
}


def legacy_targets() -> set[str]:
    """Every ``_target_`` an old head config may hold."""
    targets = {LEGACY_FACTORY}
    for old_class, module in OLD_MODULES.items():
        targets |= {f"facerec.heads.{old_class}", f"facerec.heads.{module}.{old_class}"}
    return targets


def old_head_name(config: Mapping) -> str | None:
    """The old head's name (``arcface``, ``center``, ...) if ``config`` is an old head config, else None."""
    target = config.get("_target_")
    if target == LEGACY_FACTORY:
        return config.get("name")
    if not isinstance(target, str):
        return None
    return OLD_MODULES.get(target.rsplit(".", 1)[-1]) if target in legacy_targets() else None


def is_legacy(config: Mapping) -> bool:
    """Whether ``config`` is a head config written before heads were composed."""
    return old_head_name(config) is not None


def _classifier(config: Mapping) -> dict:
    """Today's classifier config from an old ``classifier: {name, sample_rate}`` or ``partial_fc: {enabled, ...}``."""
    old = config.get("classifier")
    if old is None and config.get("partial_fc") is not None:
        legacy = dict(config["partial_fc"])
        old = {"name": "partial_fc", **legacy} if legacy.pop("enabled", False) else {"name": "full"}
    options = dict(old or {"name": "full"})
    if options.pop("name", "full") == "partial_fc":
        return {"_target_": "facerec.heads.PartialFC", "_partial_": True, **options}
    return {"_target_": "facerec.heads.FullClassifier", "_partial_": True}


def upgrade_config(config: Mapping) -> dict:
    """Today's head config (``_target_: facerec.heads.Head``) equal to an old one.

    Raises:
        ValueError: ``config`` is not an old head config, or holds a parameter the old head did not take.
    """
    name = old_head_name(config)
    if name not in OLD_HEADS:
        raise ValueError(f"head config with _target_ {config.get('_target_')!r} is not an old facerec head")
    _, margin, margin_keys = OLD_HEADS[name]
    old = {k: v for k, v in config.items() if k not in ("_target_", "name", "classifier", "partial_fc")}
    center_keys = set(CENTER_KEYS) | ({"center_on"} if name == "arcface_center" else set())
    known = set(margin_keys) | (center_keys if name in ("center", "arcface_center") else set())
    known |= {"subcenters"} if name == "subcenter_arcface" else set()
    unknown = sorted(set(old) - known)
    if unknown:
        raise ValueError(f"old head {name} config holds unknown parameters {unknown}")
    head: dict[str, Any] = {
        "_target_": "facerec.heads.Head",
        "margin": {"_target_": MARGIN_TARGETS[margin], **{k: old[k] for k in margin_keys if k in old}},
        "classifier": _classifier(config),
    }
    if name == "subcenter_arcface":
        head["subcenters"] = int(old.get("subcenters", 3))
    if name in ("center", "arcface_center"):
        center = {new: old[key] for key, new in CENTER_KEYS.items() if key in old}
        center_on = old.get("center_on", "normalized") if name == "arcface_center" else "raw"
        head["terms"] = {"center": {"_target_": "facerec.heads.CenterLoss", "_partial_": True, **center}}
        head["terms"]["center"]["center_on"] = center_on
    return head


def upgrade_state(config: Mapping, state_dict: dict[str, torch.Tensor], prefix: str = "head.") -> None:
    """Renames an old head's weights in ``state_dict`` (in place) to today's layout.

    ``weight`` → ``classifier.weight``; ``margin_head.*`` → ``*``; a linear classifier's ``weight`` and
    ``bias`` → one ``classifier.weight`` with the bias last; ``center_loss.centers`` →
    ``terms.center.centers``; AdaFace's ``batch_mean``/``batch_std`` → ``margin.*``.
    """
    name = old_head_name(config)
    renames = {"weight": "classifier.weight", "center_loss.centers": "terms.center.centers"}
    renames |= {"batch_mean": "margin.batch_mean", "batch_std": "margin.batch_std"}
    for key in [k for k in state_dict if k.startswith(prefix)]:
        old = key[len(prefix) :].removeprefix("margin_head.")
        state_dict[prefix + renames.get(old, old)] = state_dict.pop(key)
    bias = state_dict.pop(f"{prefix}classifier.bias", None)
    if name in ("softmax", "center") and bias is not None:
        weight = state_dict[f"{prefix}classifier.weight"]
        state_dict[f"{prefix}classifier.weight"] = torch.cat([weight, bias.unsqueeze(1).to(weight.dtype)], dim=1)


def upgrade_checkpoint(prefix: str, checkpoint: dict, resuming: bool) -> None:
    """Renames an old head's weights in a Lightning checkpoint (in place); no-op for today's checkpoints.

    Args:
        prefix: The head's state-dict prefix, e.g. ``"head."``.
        checkpoint: The checkpoint dict (``hyper_parameters.head`` tells an old head).
        resuming: The checkpoint resumes training (its optimizer state will be loaded).

    Raises:
        ValueError: Resuming an old head's training: its optimizer state does not fit today's head.
    """
    old_head = checkpoint.get("hyper_parameters", {}).get("head") or {}
    if not is_legacy(old_head):
        return
    if resuming and checkpoint.get("optimizer_states"):
        raise ValueError(
            "this checkpoint was written before facerec's heads were composed (head._target_ "
            f"{old_head.get('_target_')}); its optimizer state does not fit today's head, so it cannot resume "
            "training. Evaluate or export it as is, or start a new run from its weights"
        )
    upgrade_state(old_head, checkpoint.get("state_dict", {}), prefix)


def current_config(config: dict) -> dict:
    """Today's head config: ``config`` itself, or the upgrade of an old one (:func:`upgrade_config`)."""
    return upgrade_config(config) if is_legacy(config) else config
