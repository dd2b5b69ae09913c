"""facerec: face-recognition training on PyTorch Lightning, timm and Hydra."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from facerec import heads, models
from facerec.inference import load_model
from facerec.run.resolvers import register_resolvers

register_resolvers()

__all__ = ["heads", "load_model", "models"]
