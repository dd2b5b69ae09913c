"""Training data, verification sets and the built-in synthetic faces."""

from facerec.data.datamodule import FaceDataModule
from facerec.data.training.training_set import open_training_set
from facerec.data.verification.sets import VerificationSet, load_pairs_set, load_verification_set

__all__ = ["FaceDataModule", "VerificationSet", "load_pairs_set", "load_verification_set", "open_training_set"]
