"""Name → head class registry used by :func:`~facerec.heads.build.create_head`."""

from __future__ import annotations

from collections.abc import Callable

from facerec.heads.base import Head

_HEADS: dict[str, type[Head]] = {}


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator registering a :class:`Head` subclass as ``name``.

    Raises:
        TypeError: The class is not a :class:`Head`.
        ValueError: ``name`` is already registered.
    """

    def wrap(cls: type[Head]) -> type[Head]:
        if not issubclass(cls, Head):
            raise TypeError(f"{cls.__name__} must subclass facerec.heads.Head to be registered as a head")
        if name in _HEADS:
            raise ValueError(f"head {name!r} is already registered by {_HEADS[name].__name__}")
        _HEADS[name] = cls
        return cls

    return wrap


def list_heads() -> list[str]:
    """Sorted names of all registered heads."""
    return sorted(_HEADS)


def registered_name(target: str | type) -> str:
    """Registered name of a head class or its import path (a config's ``_target_``).

    Raises:
        ValueError: Not a registered head class (the message lists the valid ones).
    """
    path = target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}"
    for name, cls in _HEADS.items():
        if path in (f"{cls.__module__}.{cls.__qualname__}", f"facerec.heads.{cls.__qualname__}"):
            return name
    valid = ", ".join(f"facerec.heads.{_HEADS[name].__qualname__}" for name in list_heads())
    raise ValueError(f"head _target_ {path} is not a registered head class; valid: {valid}")


def head_class(name: str) -> type[Head]:
    """Head class registered as ``name``; ValueError (listing valid names) if there is none."""
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads: {', '.join(list_heads())}")
    return _HEADS[name]
