"""Building ``eval_sets`` entries from their configs, and running them.

Each entry is a config of the group ``conf/eval_set/`` placed under ``eval_sets.<name>``
(``+eval_set@eval_sets.ijbc=ijb eval_sets.ijbc.root=DIR``) and built by ``hydra.utils.instantiate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from facerec.eval_sets.base import EvalSet
from facerec.eval_sets.ijb import IJBSet
from facerec.eval_sets.search import SearchSet
from facerec.inference import FaceEmbedder

KINDS: tuple[type[EvalSet], ...] = (IJBSet, SearchSet)
"""The sets of ``conf/eval_set/``, in the order of their result tables."""


def set_options(kind: type[EvalSet]) -> dict[str, inspect.Parameter]:
    """``{option: parameter}`` of a set class: its constructor's parameters but ``name``."""
    parameters = inspect.signature(kind).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {key: value for key, value in parameters.items() if key != "name" and value.kind in named}


def required_options(kind: type[EvalSet]) -> list[str]:
    """The options of a set class without a default (``???`` in its config)."""
    return [key for key, parameter in set_options(kind).items() if parameter.default is parameter.empty]


def override_value(value: Any) -> str:
    """A config value as a Hydra command-line value: ``true``, ``null``, ``/d/IJBC``."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def new_command(name: str, kind: type[EvalSet], values: Mapping[str, str]) -> str:
    """The overrides that add set ``name`` of ``kind`` with ``values``."""
    return " ".join(
        [f"+eval_set@eval_sets.{name}={kind.config_name}", *(f"eval_sets.{name}.{k}={v}" for k, v in values.items())]
    )


def old_syntax_message(name: str, entry: Any) -> str:
    """What to give instead of an entry without ``_target_`` (the former ``+eval_sets.<name>.root=DIR``)."""
    options = {str(key): value for key, value in entry.items()} if isinstance(entry, Mapping) else {}
    matching = [kind for kind in KINDS if options.keys() & set(required_options(kind))]
    if len(matching) == 1:
        values = {**dict.fromkeys(required_options(matching[0]), "DIR"), **options}
        hint = new_command(name, matching[0], {key: override_value(value) for key, value in values.items()})
    else:
        hint = " or ".join(new_command(name, kind, dict.fromkeys(required_options(kind), "DIR")) for kind in KINDS)
    return (
        f"eval_sets.{name} has no _target_: sets are added from the config group conf/eval_set/ "
        f"({', '.join(kind.config_name for kind in KINDS)}), not with +eval_sets.{name}.<option>=...; give {hint}"
    )


def build_eval_set(name: str, entry: Any) -> EvalSet:
    """Builds one ``eval_sets`` entry with ``hydra.utils.instantiate``, its name passed in; reads no file.

    Raises:
        ValueError: For an entry without ``_target_`` (giving the command to type instead), a ``_target_`` that
            is not an :class:`EvalSet`, an unknown option (naming the valid ones) or a mandatory option not set.
    """
    if not isinstance(entry, DictConfig) or "_target_" not in entry:
        raise ValueError(old_syntax_message(name, entry))
    kind = get_class(entry._target_)
    if not issubclass(kind, EvalSet):
        raise ValueError(
            f"eval_sets.{name}._target_={entry._target_} is not an evaluation set (facerec.eval_sets.EvalSet): "
            f"use a config of conf/eval_set/ ({', '.join(known.config_name for known in KINDS)})"
        )
    options = set_options(kind)
    unknown = sorted(key for key in entry if key not in options and not (key.startswith("_") and key.endswith("_")))
    if unknown:
        raise ValueError(f"eval_sets.{name} has unknown options {unknown}: {entry._target_} takes {', '.join(options)}")
    missing = [key for key in entry if key in options and OmegaConf.is_missing(entry, key)]
    if missing:
        needed = " ".join(f"eval_sets.{name}.{key}=..." for key in missing)
        raise ValueError(f"eval_sets.{name}: {', '.join(missing)} not set (???): give {needed}")
    return instantiate(entry, name=name)


def check_eval_sets(eval_sets: DictConfig | Mapping | None) -> dict[str, EvalSet]:
    """Builds every ``eval_sets`` entry, checks its folders and reads its files, before any embedding.

    Every set is built, then every set's folders checked, then every set loaded, so that a bad entry or file
    of any set fails before any image is embedded.

    Args:
        eval_sets: ``{name: config of conf/eval_set/}`` (plain mappings are converted), or None.

    Raises:
        ValueError: For a bad entry (:func:`build_eval_set`), a malformed IJB file or overlapping search folders.
        FileNotFoundError: For a folder option that is not a folder, naming it.
    """
    if not eval_sets:
        return {}
    if not OmegaConf.is_config(eval_sets):
        eval_sets = OmegaConf.create(dict(eval_sets))
    built = {str(name): build_eval_set(str(name), entry) for name, entry in eval_sets.items()}
    for eval_set in built.values():
        eval_set.check()
    for eval_set in built.values():
        eval_set.load()
    return built


def run_eval_sets(
    eval_sets: Mapping[str, EvalSet],
    embedder: FaceEmbedder,
    output_dir: Path,
    batch_size: int = 64,
    num_workers: int = 0,
) -> dict[type[EvalSet], dict[str, dict[str, float]]]:
    """Runs every checked set (:func:`check_eval_sets`).

    Args:
        eval_sets: ``{name: set}``.
        embedder: The model to evaluate.
        output_dir: The run directory, for the sets' output files.
        batch_size: Images per embedding batch of a set that does not set its own.
        num_workers: Loader processes of a set that does not set its own.

    Returns:
        ``{kind: {set name: metrics}}`` in the order of :data:`KINDS` (then any other kind); a kind's
        ``title`` and ``columns`` make its result table.
    """
    grouped: dict[type[EvalSet], dict[str, dict[str, float]]] = {kind: {} for kind in KINDS}
    for name, eval_set in eval_sets.items():
        own_batch_size, own_num_workers = eval_set.batch_size, eval_set.num_workers
        grouped.setdefault(type(eval_set), {})[name] = eval_set.run(
            embedder,
            output_dir,
            batch_size if own_batch_size is None else own_batch_size,
            num_workers if own_num_workers is None else own_num_workers,
        )
    return grouped
