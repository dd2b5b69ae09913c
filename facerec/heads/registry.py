"""Name → head class registry behind :func:`create_head`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that makes a head available to :func:`create_head` as ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is already registered by {_HEADS[name].__name__}")
        _HEADS[name] = cls
        return cls

    return wrap


def list_heads() -> list[str]:
    """Sorted names of all registered heads."""
    return sorted(_HEADS)


def create_head(name: str, embedding_size: int, num_classes: int, **kwargs) -> nn.Module:
    """Builds the head registered as ``name`` (the same name as ``conf/head/<name>.yaml``).

    Args:
        name: Registered head name, e.g. ``"arcface"``.
        embedding_size: E, the embedding dimension.
        num_classes: C, the number of identities.
        **kwargs: The head's own parameters (``scale``, ``margin``, ...).

    Raises:
        ValueError: If ``name`` is not registered; the message lists the valid names.
    """
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads: {', '.join(list_heads())}")
    return _HEADS[name](embedding_size=embedding_size, num_classes=num_classes, **kwargs)
