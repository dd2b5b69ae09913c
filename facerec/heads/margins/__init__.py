"""Margins (logit transforms), one per module, each registered by name (``conf/margin/<name>.yaml``)."""

from facerec.heads.margins.adaface import AdaFace
from facerec.heads.margins.arcface import ArcFace
from facerec.heads.margins.combined import CombinedMargin
from facerec.heads.margins.cosface import CosFace
from facerec.heads.margins.elasticface import ElasticFace
from facerec.heads.margins.softmax import Softmax
from facerec.heads.margins.sphereface2 import SphereFace2, SphereFace2Loss

__all__ = [
    "AdaFace",
    "ArcFace",
    "CombinedMargin",
    "CosFace",
    "ElasticFace",
    "Softmax",
    "SphereFace2",
    "SphereFace2Loss",
]
