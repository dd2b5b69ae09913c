"""Head construction: :func:`build_head` from a ``conf/head`` config, :func:`create_head` from a margin name."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate

from facerec.heads.checks import check_parameters
from facerec.heads.classifiers.full import FullClassifier
from facerec.heads.classifiers.partial_fc import PartialFC
from facerec.heads.head import Head
from facerec.heads.legacy import current_config
from facerec.heads.losses import ClassificationLoss
from facerec.heads.registry import margin_class

CLASSIFIERS: dict[str, type[FullClassifier]] = {"full": FullClassifier, "partial_fc": PartialFC}
"""``conf/classifier/`` names and their classes."""
BUILT_BY_THE_HEAD = ("embedding_size", "num_classes", "rows_per_class", "bias", "linear_init")
"""Arguments the head (or the module, for the head) passes to the factories it is given; a config does not set them."""


def check_head_config(config: Mapping, path: str = "head") -> None:
    """Checks every part's ``_target_`` and parameter names and types before anything is built.

    Raises:
        ValueError: A ``_target_`` that cannot be imported, or a parameter its class does not take
            (the message names the key path, e.g. ``head.margin``, and lists the valid parameters).
        TypeError: A value of the wrong type, e.g. ``head.margin.margin=abc``.
    """
    target = config.get("_target_")
    if target is not None:
        try:
            cls = get_class(target)
        except Exception as error:  # Hydra raises ImportError or ValueError variants
            raise ValueError(f"{path}._target_={target} cannot be imported: {error}") from None
        own = {key: value for key, value in config.items() if not key.startswith("_")}
        # Only factories the head calls (classifier, terms: ``_partial_``) get the head's arguments; a margin's
        # own ``bias`` (softmax) is a parameter of the config.
        built = BUILT_BY_THE_HEAD if config.get("_partial_") or path == "head" else ()
        check_parameters(path, cls, own, skip=built)
    for key, value in config.items():
        if isinstance(value, Mapping):
            check_head_config(value, f"{path}.{key}")


def build_head(config: Mapping, embedding_size: int, num_classes: int) -> Head:
    """Builds a head from its ``conf/head`` config (``_target_: facerec.heads.Head``), as the LightningModule does.

    A config written before heads were composed (a checkpoint's) is upgraded first
    (:func:`~facerec.heads.legacy.upgrade_config`).

    Raises:
        ValueError, TypeError: As :func:`check_head_config`, a ``_target_`` that is not :class:`Head`, or a
            value out of range.
    """
    config = current_config(dict(config))
    check_head_config(config)
    target = config.get("_target_")
    cls = get_class(target) if isinstance(target, str) else None
    if not (isinstance(cls, type) and issubclass(cls, Head)):
        raise ValueError(
            f"head._target_={target} is not facerec.heads.Head: a head config targets Head and composes "
            "conf/margin, conf/classifier and conf/loss_term"
        )
    try:
        return instantiate(config, embedding_size=embedding_size, num_classes=num_classes, _convert_="all")
    except InstantiationException as error:  # a range check in a constructor: raise it, not Hydra's wrapper
        if isinstance(error.__cause__, ValueError | TypeError):
            raise error.__cause__ from None
        raise


def classifier_factory(classifier: Mapping | Callable[..., FullClassifier] | None) -> Callable[..., FullClassifier]:
    """A classifier factory from ``{"name": "full" | "partial_fc", **options}`` (or a factory, returned as is)."""
    if classifier is None or callable(classifier):
        return classifier or FullClassifier
    options = dict(classifier)
    name = options.pop("name", "full")
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; valid classifiers: {', '.join(CLASSIFIERS)}")
    check_parameters("head.classifier", CLASSIFIERS[name], options, skip=BUILT_BY_THE_HEAD)
    return functools.partial(CLASSIFIERS[name], **options)


def create_head(
    name: str,
    embedding_size: int,
    num_classes: int,
    classifier: Mapping | Callable[..., FullClassifier] | None = None,
    terms: Mapping[str, Any] | None = None,
    subcenters: int = 1,
    loss: ClassificationLoss | None = None,
    **margin: Any,
) -> Head:
    """A head with the margin registered as ``name``, for Python use (configs use :func:`build_head`).

    Args:
        name: Registered margin name, e.g. ``"arcface"`` (:func:`~facerec.heads.list_margins`).
        embedding_size: E.
        num_classes: C.
        classifier: ``{"name": "full"}`` (default) or ``{"name": "partial_fc", "sample_rate": r}``, or a factory.
        terms: Extra loss terms by name (:class:`~facerec.heads.terms.LossTerm` or factories).
        subcenters: K centres per class.
        loss: The classification loss; default: the margin's own (``SphereFace2Loss`` for ``sphereface2``),
            else softmax cross-entropy.
        **margin: The margin's parameters (``scale``, ``margin``, ...).

    Raises:
        ValueError: Unregistered ``name``, unknown or out-of-range parameter, unknown classifier.
        TypeError: A parameter of the wrong type.
    """
    cls = margin_class(name)
    check_parameters("head.margin", cls, margin)
    check_parameters("head", Head, {"subcenters": subcenters})
    return Head(
        embedding_size,
        num_classes,
        cls(**margin),
        classifier=classifier_factory(classifier),
        loss=loss,
        terms=terms,
        subcenters=subcenters,
    )
