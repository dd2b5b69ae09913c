"""Margins (logit transforms), one per module, each registered by name (``conf/margin/<name>.yaml``)."""

from facerec.heads.margins.adaface import AdaFace
from facerec.heads.margins.arcface import ArcFace
from facerec.heads.margins.combined import CombinedMargin
from facerec.heads.margins.cosface import CosFace
from facerec.heads.margins.curricularface import CurricularFace
from facerec.heads.margins.mv_softmax import MVSoftmax
from facerec.heads.margins.npcface import NPCFace
from facerec.heads.margins.softmax import Softmax

__all__ = ["AdaFace", "ArcFace", "CombinedMargin", "CosFace", "CurricularFace", "MVSoftmax", "NPCFace", "Softmax"]
