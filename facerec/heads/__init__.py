"""Classification heads: ``create_head(name, embedding_size, num_classes, **kwargs)``."""

from facerec.heads import (
    adaface,
    arcface,
    arcface_center,
    center,
    combined,
    cosface,
    softmax,
    subcenter_arcface,
)
from facerec.heads.base import Head, HeadOutput, MarginHead
from facerec.heads.partial_fc import PartialFC
from facerec.heads.registry import create_head, list_heads, register_head

__all__ = [
    "Head",
    "HeadOutput",
    "MarginHead",
    "PartialFC",
    "adaface",
    "arcface",
    "arcface_center",
    "center",
    "combined",
    "cosface",
    "create_head",
    "list_heads",
    "register_head",
    "softmax",
    "subcenter_arcface",
]
