"""Training data, verification sets and the built-in synthetic faces."""

from facerec.data.datamodule import FaceDataModule
from facerec.data.verification import VerificationSet, load_pairs_set

__all__ = ["FaceDataModule", "VerificationSet", "load_pairs_set"]
