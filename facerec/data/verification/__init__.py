"""Verification sets: ``pairs.txt`` + images and insightface ``.bin`` files, read for the 10-fold protocol."""

from facerec.data.verification.sets import VerificationImages, VerificationSet, load_pairs_set, load_verification_set

__all__ = ["VerificationImages", "VerificationSet", "load_pairs_set", "load_verification_set"]
