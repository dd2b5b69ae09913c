"""Lightning callbacks."""

from facerec.callbacks.verification import VerificationCallback

__all__ = ["VerificationCallback"]
