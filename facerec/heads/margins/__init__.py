"""Margins (logit transforms), one per module, each registered by name (``conf/margin/<name>.yaml``)."""

from facerec.heads.margins.adacos import AdaCos
from facerec.heads.margins.adaface import AdaFace
from facerec.heads.margins.arcface import ArcFace
from facerec.heads.margins.circleloss import CircleLoss
from facerec.heads.margins.combined import CombinedMargin
from facerec.heads.margins.cosface import CosFace
from facerec.heads.margins.curricularface import CurricularFace
from facerec.heads.margins.elasticface import ElasticFace
from facerec.heads.margins.magface import MagFace, MagFaceRegularizer
from facerec.heads.margins.mv_softmax import MVSoftmax
from facerec.heads.margins.npcface import NPCFace
from facerec.heads.margins.softmax import Softmax
from facerec.heads.margins.sphereface2 import SphereFace2, SphereFace2Loss

__all__ = [
    "AdaCos",
    "AdaFace",
    "ArcFace",
    "CircleLoss",
    "CombinedMargin",
    "CosFace",
    "CurricularFace",
    "ElasticFace",
    "MVSoftmax",
    "MagFace",
    "MagFaceRegularizer",
    "NPCFace",
    "Softmax",
    "SphereFace2",
    "SphereFace2Loss",
]
