"""Name → margin class registry: ``conf/margin/<name>.yaml`` targets a registered class."""

from __future__ import annotations

from collections.abc import Callable

from facerec.heads.margin import Margin

_MARGINS: dict[str, type[Margin]] = {}


def register_margin(name: str) -> Callable[[type[Margin]], type[Margin]]:
    """Class decorator registering a :class:`~facerec.heads.margin.Margin` subclass as ``name``.

    A registered margin may be built from a checkpoint's hyper-parameters and is covered by the head
    contract tests (``tests/heads/test_contract.py``) without editing them.

    Raises:
        TypeError: The class is not a :class:`~facerec.heads.margin.Margin`.
        ValueError: ``name`` is already registered.
    """

    def wrap(cls: type[Margin]) -> type[Margin]:
        if not (isinstance(cls, type) and issubclass(cls, Margin)):
            raise TypeError(f"{cls!r} must subclass facerec.heads.Margin to be registered as a margin")
        if name in _MARGINS and _MARGINS[name] is not cls:
            raise ValueError(f"margin {name!r} is already registered by {_MARGINS[name].__name__}")
        _MARGINS[name] = cls
        return cls

    return wrap


def list_margins(facerec_only: bool = False) -> list[str]:
    """Sorted names of the registered margins (``facerec_only``: those facerec defines, not a user's or a test's)."""
    return sorted(name for name, cls in _MARGINS.items() if not facerec_only or cls.__module__.startswith("facerec."))


def margin_class(name: str) -> type[Margin]:
    """Margin class registered as ``name``; ValueError (listing valid names) if there is none."""
    if name not in _MARGINS:
        raise ValueError(f"unknown margin {name!r}; valid margins: {', '.join(list_margins())}")
    return _MARGINS[name]


def registered_margins() -> list[type[Margin]]:
    """Every registered margin class, in name order."""
    return [_MARGINS[name] for name in list_margins()]
