"""Keep the global random state in checkpoints, so a resumed run draws the same numbers."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RNGStateCallback(Callback):
    """Saves the torch, CUDA, numpy and Python random states with every checkpoint and restores them on resume.

    Dropout, DataLoader worker seeds and anything else drawing from the global generators then
    continue as in an uninterrupted run. (The training order and augmentation are seeded per epoch
    by :class:`~facerec.data.training.sampling.EpochSeededSampler`.) The states are stored as tensors and
    plain Python values, so checkpoints still load with ``torch.load(..., weights_only=True)``.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        kind, keys, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, state, gauss = state_dict["python"]
        random.setstate((version, tuple(state), gauss))
