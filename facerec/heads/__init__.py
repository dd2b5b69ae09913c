"""Classification heads: the classes (``conf/head`` configs target them), and ``create_head(name, E, C, **kwargs)``."""

from facerec.heads.adaface import AdaFaceHead
from facerec.heads.arcface import ArcFaceHead
from facerec.heads.arcface_center import ArcFaceCenterHead
from facerec.heads.base import Head, HeadOutput, MarginHead
from facerec.heads.build import build_head, create_head
from facerec.heads.center import CenterHead
from facerec.heads.combined import CombinedMarginHead
from facerec.heads.cosface import CosFaceHead
from facerec.heads.partial_fc import PartialFC
from facerec.heads.registry import list_heads, register_head, registered_name
from facerec.heads.softmax import SoftmaxHead
from facerec.heads.subcenter_arcface import SubCenterArcFaceHead

__all__ = [
    "AdaFaceHead",
    "ArcFaceCenterHead",
    "ArcFaceHead",
    "CenterHead",
    "CombinedMarginHead",
    "CosFaceHead",
    "Head",
    "HeadOutput",
    "MarginHead",
    "PartialFC",
    "SoftmaxHead",
    "SubCenterArcFaceHead",
    "build_head",
    "create_head",
    "list_heads",
    "register_head",
    "registered_name",
]
