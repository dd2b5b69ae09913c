"""facerec: face-recognition training on PyTorch Lightning, timm and Hydra."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from facerec import heads, models

__all__ = ["heads", "models"]
