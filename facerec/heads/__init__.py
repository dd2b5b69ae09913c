"""Classification heads composed of a classifier, a margin, a loss and extra loss terms.

``conf/head/<name>.yaml`` targets :class:`Head` and composes ``conf/margin``, ``conf/classifier`` and
``conf/loss_term`` configs; :func:`create_head` builds one from a margin name in Python.
"""

from facerec.heads.build import build_head, create_head
from facerec.heads.center_loss import CenterLoss
from facerec.heads.classifiers import FullClassifier, PartialFC
from facerec.heads.head import Head, HeadOutput
from facerec.heads.losses import ClassificationLoss, CrossEntropy
from facerec.heads.margin import ClassColumns, Margin, MarginInput, TargetMargin
from facerec.heads.margins import (
    AdaCos,
    AdaFace,
    ArcFace,
    CircleLoss,
    CombinedMargin,
    CosFace,
    CurricularFace,
    ElasticFace,
    MagFace,
    MagFaceRegularizer,
    MVSoftmax,
    NPCFace,
    Softmax,
    SphereFace2,
    SphereFace2Loss,
)
from facerec.heads.registry import list_margins, margin_class, register_margin, registered_margins
from facerec.heads.terms import LossTerm

__all__ = [
    "AdaCos",
    "AdaFace",
    "ArcFace",
    "CenterLoss",
    "CircleLoss",
    "ClassColumns",
    "ClassificationLoss",
    "CombinedMargin",
    "CosFace",
    "CrossEntropy",
    "CurricularFace",
    "ElasticFace",
    "FullClassifier",
    "Head",
    "HeadOutput",
    "LossTerm",
    "MVSoftmax",
    "MagFace",
    "MagFaceRegularizer",
    "Margin",
    "MarginInput",
    "NPCFace",
    "PartialFC",
    "Softmax",
    "SphereFace2",
    "SphereFace2Loss",
    "TargetMargin",
    "build_head",
    "create_head",
    "list_margins",
    "margin_class",
    "register_margin",
    "registered_margins",
]
