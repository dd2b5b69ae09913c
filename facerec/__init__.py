"""facerec: face-recognition training on PyTorch Lightning, timm and Hydra."""

from facerec import heads, models

__all__ = ["heads", "models"]
