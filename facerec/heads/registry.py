"""Name → head class registry behind :func:`create_head`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from facerec.heads.checks import check_head_parameters
from facerec.heads.partial_fc import PartialFC

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


def create_head(
    name: str, embedding_size: int, num_classes: int, partial_fc: Mapping | None = None, **kwargs
) -> nn.Module:
    """Builds the head registered as ``name`` (the same name as ``conf/head/<name>.yaml``).

    Args:
        name: Registered head name, e.g. ``"arcface"``.
        embedding_size: E, the embedding dimension.
        num_classes: C, the number of identities.
        partial_fc: ``{"enabled": bool, "sample_rate": r}``; when enabled the margin head is wrapped
            in :class:`~facerec.heads.partial_fc.PartialFC` (centres sharded across ranks, r of each
            shard's classes sampled per step).
        **kwargs: The head's own parameters (``scale``, ``margin``, ...).

    Raises:
        ValueError: If ``name`` is not registered (the message lists the valid names), a parameter
            is not one the head takes or outside its range, or ``partial_fc`` has keys other than
            ``enabled`` and ``sample_rate``.
        TypeError: If a parameter has the wrong type (e.g. ``margin="abc"``).
    """
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads: {', '.join(list_heads())}")
    check_head_parameters(name, _HEADS[name], kwargs)
    head = _HEADS[name](embedding_size=embedding_size, num_classes=num_classes, **kwargs)
    options = dict(partial_fc or {})
    unknown = set(options) - {"enabled", "sample_rate"}
    if unknown:
        raise ValueError(f"unknown partial_fc options {sorted(unknown)}; valid: enabled, sample_rate")
    if not options.get("enabled", False):
        return head
    return PartialFC(head, sample_rate=float(options.get("sample_rate", 1.0)))
