"""Verification sets: ``pairs.txt`` + images and insightface ``.bin`` files, read for the 10-fold protocol."""
