"""The LightningModule, its LR schedule and the safe loading of its training checkpoints."""

from facerec.module.face_module import FaceRecognitionModule
from facerec.module.schedule import WarmupDecay
from facerec.module.strategy import ShardedCentresDDPStrategy

__all__ = ["FaceRecognitionModule", "ShardedCentresDDPStrategy", "WarmupDecay"]
