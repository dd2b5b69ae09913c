"""Head parameter checks, so bad values fail at build time rather than at the first step."""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits a parameter annotated ``float``, ``int``, ``bool``, ``str`` or a union of them."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_accepts(option, value) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (bool, str):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " or ".join(_describe(option) for option in typing.get_args(annotation))
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def constructor_parameters(cls: type, skip: tuple[str, ...] = ()) -> tuple[list[str], dict[str, Any]]:
    """Names and annotations of a class' constructor parameters (less ``skip``), following ``**kwargs`` up the MRO."""
    names: list[str] = []
    hints: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        named = [p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        names += [key for key in named if key != "self" and key not in skip and key not in names]
        hints = typing.get_type_hints(klass.__init__) | hints
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names, hints


def check_parameters(path: str, cls: type, parameters: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Checks ``parameters``' names and types against ``cls.__init__`` (``path``: the config key, for messages).

    Raises:
        ValueError: A parameter the class does not take (the message lists those it takes).
        TypeError: A value not matching its annotation, e.g. ``head.margin.margin=abc``.
    """
    valid, hints = constructor_parameters(cls, skip)
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise ValueError(
            f"{path} ({cls.__name__}) takes no parameter {', '.join(unknown)}; its parameters: {', '.join(valid)}"
        )
    for key, value in parameters.items():
        if key in hints and not _accepts(hints[key], value):
            raise TypeError(
                f"{path}.{key}={value} has type {type(value).__name__}; {cls.__name__} needs {_describe(hints[key])}"
            )


def check_range(
    name: str, value: float, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False
) -> None:
    """Raises ``ValueError`` naming ``head.<name>`` unless ``low ≤ value ≤ high`` (``*_open``: strict); NaN fails."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
        raise ValueError(f"head.{name}={value} is outside {interval}")
