"""Backbones, necks and the embedding network."""

from facerec.models.backbone import create_backbone
from facerec.models.necks import EmbeddingNet, LinearNeck, PoolFCNeck

__all__ = ["EmbeddingNet", "LinearNeck", "PoolFCNeck", "create_backbone"]
