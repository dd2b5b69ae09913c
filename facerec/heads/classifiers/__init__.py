"""Classifiers: how class centres are held and which classes a step sees (``conf/classifier``)."""

from facerec.heads.classifiers.full import FullClassifier
from facerec.heads.classifiers.partial_fc import PartialFC

__all__ = ["FullClassifier", "PartialFC"]
