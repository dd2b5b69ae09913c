"""``eval.py``'s ``eval_sets``: one class per kind of set, each built from the config group ``conf/eval_set/``.

- :class:`IJBSet` (``ijb``): IJB-B / IJB-C 1:1 template verification in the official layout.
- :class:`SearchSet` (``search``): 1:N search over identity folders, optionally with distractors.

``python eval.py ckpt_path=M +eval_set@eval_sets.ijbc=ijb eval_sets.ijbc.root=DIR`` adds a set named ``ijbc``.
:func:`check_eval_sets` builds every entry and reads its files before any image is embedded;
:func:`run_eval_sets` runs them.
"""

from facerec.eval_sets.base import EvalSet
from facerec.eval_sets.build import KINDS, build_eval_set, check_eval_sets, run_eval_sets
from facerec.eval_sets.ijb import IJBSet
from facerec.eval_sets.search import SearchSet

__all__ = [
    "KINDS",
    "EvalSet",
    "IJBSet",
    "SearchSet",
    "build_eval_set",
    "check_eval_sets",
    "run_eval_sets",
]
