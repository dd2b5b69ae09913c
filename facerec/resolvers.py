"""OmegaConf resolvers used by ``conf/``; registered when :mod:`facerec` is imported."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

OFFLINE_WANDB_MODES = ("", "offline", "dryrun")


def wandb_offline() -> bool:
    """Whether W&B should log offline: yes unless ``WANDB_MODE`` asks for another mode.

    ``WANDB_MODE=online`` (W&B's documented switch) goes online, ``disabled`` turns W&B off;
    unset, ``offline`` or ``dryrun`` keep the run offline, so W&B never prompts for an account.
    """
    return os.environ.get("WANDB_MODE", "").strip().lower() in OFFLINE_WANDB_MODES


def register_resolvers() -> None:
    """Registers ``${wandb_offline:}`` (idempotent)."""
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
