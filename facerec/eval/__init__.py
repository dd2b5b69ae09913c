"""Verification metrics and baselines (pure functions, no Lightning)."""

from facerec.eval.verification import evaluate

__all__ = ["evaluate"]
