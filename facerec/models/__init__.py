"""Backbones, necks and the embedding network; importing it registers the face nets with timm."""

from facerec.models import iresnet, mobilefacenet
from facerec.models.backbone import create_backbone
from facerec.models.necks import EmbeddingNet, GDCNeck, LinearNeck, PoolFCNeck, build_embedding_net, embed_with_mirror

__all__ = [
    "EmbeddingNet",
    "GDCNeck",
    "LinearNeck",
    "PoolFCNeck",
    "build_embedding_net",
    "create_backbone",
    "embed_with_mirror",
    "iresnet",
    "mobilefacenet",
]
