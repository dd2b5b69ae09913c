"""Backbones, necks and the embedding network."""

from facerec.models.backbone import create_backbone
from facerec.models.necks import EmbeddingNet, LinearNeck, PoolFCNeck, build_embedding_net

__all__ = ["EmbeddingNet", "LinearNeck", "PoolFCNeck", "build_embedding_net", "create_backbone"]
