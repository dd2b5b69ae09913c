"""Run plumbing behind ``train.py`` and ``eval.py``: tasks, run directories, resume checks, multirun, outputs."""
