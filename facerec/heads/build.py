"""Head construction: :func:`create_head` by name, :func:`build_head` from a ``conf/head`` config."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from facerec.heads.base import Head, MarginHead
from facerec.heads.checks import check_head_parameters
from facerec.heads.partial_fc import PartialFC
from facerec.heads.registry import head_class, registered_name

log = logging.getLogger(__name__)

LEGACY_TARGET = "facerec.heads.create_head"
"""Old-style head config ``_target_`` (with a ``name`` key), still accepted by :func:`build_head`."""

CLASSIFIERS = {"full": set(), "partial_fc": {"sample_rate"}}
"""``conf/classifier/`` names and the options each takes besides ``name``."""


def create_head(
    name: str,
    embedding_size: int,
    num_classes: int,
    classifier: Mapping | None = None,
    partial_fc: Mapping | None = None,
    **kwargs,
) -> Head:
    """Builds the head registered as ``name`` (as in ``conf/head/<name>.yaml``), checking its parameters.

    Args:
        name: Registered head name, e.g. ``"arcface"``.
        embedding_size: E, the embedding dimension.
        num_classes: C, the number of identities.
        classifier: ``{"name": "full"}`` (default) or ``{"name": "partial_fc", "sample_rate": r}``
            (margin heads only: :class:`~facerec.heads.partial_fc.PartialFC`; with ``softmax``/``center``
            a warning is logged and the full classifier kept).
        partial_fc: Old-style ``{"enabled": bool, "sample_rate": r}``; used when ``classifier`` is None.
        **kwargs: The head's own parameters (``scale``, ``margin``, ...).

    Raises:
        ValueError: Unregistered ``name``, unknown or out-of-range parameter, unknown ``classifier``
            or option. Messages list the valid values.
        TypeError: A parameter of the wrong type (e.g. ``margin="abc"``).
    """
    cls = head_class(name)
    check_head_parameters(name, cls, kwargs)
    head = cls(embedding_size=embedding_size, num_classes=num_classes, **kwargs)
    if partial_fc is not None and classifier is None:
        legacy = dict(partial_fc)  # when disabled, sample_rate is dropped: the full classifier takes no options
        classifier = {"name": "partial_fc", **legacy} if legacy.pop("enabled", False) else {"name": "full"}
    options = dict(classifier or {"name": "full"})
    kind = options.pop("name", "full")
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}; valid classifiers: {', '.join(CLASSIFIERS)}")
    unknown = set(options) - CLASSIFIERS[kind]
    if unknown:
        valid = ", ".join(sorted(CLASSIFIERS[kind])) or "none"
        raise ValueError(f"classifier {kind} takes no options {sorted(unknown)}; valid: {valid}")
    if kind == "full":
        return head
    if not isinstance(head, MarginHead):  # a preset's classifier=partial_fc composed with head=softmax or center
        log.warning("classifier=partial_fc needs a margin head; head %s has none and keeps every class centre", name)
        return head
    head.classifier = PartialFC(head.classifier, sample_rate=float(options.get("sample_rate", 1.0)))
    return head


def build_head(config: Mapping, embedding_size: int, num_classes: int) -> Head:
    """Builds a head from its ``conf/head`` config, as the LightningModule does.

    Args:
        config: ``_target_`` (a registered head class, e.g. ``facerec.heads.ArcFaceHead``, or
            :data:`LEGACY_TARGET` with ``name``), the head's parameters and ``classifier``.
        embedding_size: E.
        num_classes: C.

    Raises:
        ValueError, TypeError: As :func:`create_head`; ValueError also for an unregistered ``_target_``.
    """
    options = dict(config)
    target = options.pop("_target_")
    name = options.pop("name") if target == LEGACY_TARGET else registered_name(target)
    return create_head(name, embedding_size, num_classes, **options)
