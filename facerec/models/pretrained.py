"""Offline resolution of timm's pretrained weights from the local caches."""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from huggingface_hub import constants, try_to_load_from_cache

HF_FILENAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def cached_weights(name: str) -> str:
    """Path of the cached pretrained weights of timm model ``name`` (``arch`` or ``arch.tag``); no network.

    Looks in the HF hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``)
    and in ``$TORCH_HOME/hub/checkpoints``.

    Raises:
        RuntimeError: timm has no weights for ``name``, or they are not in the cache (names the folders).
    """
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise RuntimeError(
            f"timm has no pretrained weights for {name!r}; set backbone.pretrained=false, or load a "
            "checkpoint with backbone.checkpoint_path=..."
        )
    if cfg.file:
        return cfg.file
    hf_cache = constants.HF_HUB_CACHE
    if cfg.hf_hub_id:
        filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILENAMES
        for filename in filenames:
            path = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=hf_cache)
            if isinstance(path, str):
                return path
    torch_cache = Path(torch.hub.get_dir()) / "checkpoints"
    if cfg.url and (torch_cache / os.path.basename(cfg.url)).is_file():
        return str(torch_cache / os.path.basename(cfg.url))
    raise RuntimeError(
        f"pretrained weights for {name!r} are not in the local cache and there is no network access. "
        f"Looked for hub repo {cfg.hf_hub_id!r} in {hf_cache} (set HF_HUB_CACHE or HF_HOME) and for "
        f"{cfg.url or 'no URL'} in {torch_cache} (set TORCH_HOME). Download them on a machine with "
        "internet access and copy the cache over, or set backbone.pretrained=false."
    )
