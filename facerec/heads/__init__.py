"""Classification heads: ``create_head(name, embedding_size, num_classes, **kwargs)``."""

from facerec.heads import arcface, softmax
from facerec.heads.base import HeadOutput, MarginHead
from facerec.heads.registry import create_head, list_heads, register_head

__all__ = ["HeadOutput", "MarginHead", "arcface", "create_head", "list_heads", "register_head", "softmax"]
