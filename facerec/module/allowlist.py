"""Checkpoint hyper-parameter allowlist: each part's ``_target_`` must name a facerec part (compared as a string,
nothing imported); other ``_`` keys, ``${...}`` in parts, backbone weight sources and ``hparams_name`` are refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.core.saving import CHECKPOINT_PAST_HPARAMS_KEYS

from facerec.errors import CheckpointError
from facerec.heads import ClassificationLoss, FullClassifier, Head, LossTerm, registered_margins
from facerec.heads.legacy import legacy_targets
from facerec.models.backbone import WEIGHT_SOURCES, check_backbone_name, create_backbone
from facerec.models.necks import NECKS
from facerec.module.schedule import LEGACY_SCHEDULE, WarmupDecay

ARGUMENT_KEYS = (*CHECKPOINT_PAST_HPARAMS_KEYS, LightningModule.CHECKPOINT_HYPER_PARAMS_KEY)
"""Checkpoint entries Lightning's ``load_from_checkpoint`` reads the model's arguments from."""
ARGUMENTS_NAME = LightningModule.CHECKPOINT_HYPER_PARAMS_NAME
"""Entry that, if set, makes Lightning pass all arguments as the one of that name."""

INSTRUCTION = "a key starting with '_' tells Hydra or Lightning what to build or call; facerec's checkpoints hold none"
INTERPOLATION = "an interpolation (${...}) is resolved when the part is built; facerec's checkpoints hold none"
SHOWN_LENGTH = 160
"""Longest value a message shows in full."""


def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`SHOWN_LENGTH` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_LENGTH else f"{text[: SHOWN_LENGTH - 3]}..."


@dataclass(frozen=True)
class Part:
    """``_target_`` strings one model part may hold, and how messages name them."""

    targets: frozenset[str]
    described: str


def part(objects: Sequence[Any], package: str, *legacy: str, described: str | None = None) -> Part:
    """Part built by one of ``objects``, named from ``package`` (re-export) or the defining module."""
    public = sorted(f"{package}.{obj.__qualname__}" for obj in objects)
    defined = {f"{obj.__module__}.{obj.__qualname__}" for obj in objects}
    return Part(frozenset({*public, *defined, *legacy}), described or ", ".join([*public, *legacy]))


def allowed_parts() -> dict[str, Part]:
    """Part name -> :class:`Part` for the module's arguments; read from the registries per call (user heads allowed)."""
    optimizers = [
        obj
        for obj in vars(torch.optim).values()
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
    ]
    return {
        "backbone": part([create_backbone], "facerec.models"),
        "neck": part(NECKS, "facerec.models"),
        "head": part([Head], "facerec.heads", *sorted(legacy_targets())),
        "optimizer": part(optimizers, "torch.optim", described="a torch.optim optimizer (e.g. torch.optim.SGD)"),
        "scheduler": part([WarmupDecay], "facerec.module", LEGACY_SCHEDULE),
    }


def subclasses(cls: type) -> list[type]:
    """``cls`` and every subclass defined so far."""
    return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]


def head_components() -> Part:
    """What a head's nested ``_target_`` may name: registered margins, classifiers, losses and loss terms."""
    classes = [*registered_margins(), *subclasses(FullClassifier), *subclasses(ClassificationLoss)]
    classes += [cls for cls in subclasses(LossTerm) if cls is not LossTerm]
    return part(classes, "facerec.heads", described="a registered margin or a facerec classifier, loss or loss term")


def refusals(value: Any, path: str, in_part: bool, nested: Part | None = None) -> Iterator[tuple[str, Any, str]]:
    """(key path, value, why) for every ``_`` key at or below ``path``, and ``${...}`` strings in a part.

    ``nested``: the ``_target_`` values allowed below ``path`` (with ``_partial_: true``), for composed parts.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            if nested is not None and key == "_target_":
                if not isinstance(item, str) or item not in nested.targets:
                    yield f"{path}.{key}", item, f"a part of the head may only be {nested.described}"
            elif nested is not None and key == "_partial_":
                if item is not True:
                    yield f"{path}.{key}", item, "_partial_ may only be true"
            elif isinstance(key, str) and key.startswith("_"):
                yield f"{path}.{key}", item, INSTRUCTION
            else:
                yield from refusals(item, f"{path}.{key}", in_part, nested)
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from refusals(item, f"{path}[{index}]", in_part, nested)
    elif in_part and isinstance(value, str) and "${" in value:
        yield path, value, INTERPOLATION


def backbone_refusals(config: Mapping, path: str) -> Iterator[tuple[str, Any, str]]:
    """Refusals for a backbone config: any weight source on, or a ``name`` that is not a timm model."""
    for key, saved in WEIGHT_SOURCES.items():
        if config.get(key, saved) is not saved:
            yield f"{path}.{key}", config[key], f"a checkpoint holds its own weights and facerec saves {key}={saved}"
    name = config.get("name")
    if not isinstance(name, str):
        yield f"{path}.name", name, "the backbone's name must be a timm model name"
        return
    try:
        check_backbone_name(name)
    except ValueError as error:
        yield f"{path}.name", name, str(error)


def argument_refusals(arguments: Any, key: str) -> Iterator[tuple[str, Any, str]]:
    """Refusals in the model arguments stored under checkpoint entry ``key``."""
    if not isinstance(arguments, Mapping):
        yield key, arguments, "the model's arguments must be a mapping"
        return
    parts = allowed_parts()
    built = {name: value for name, value in arguments.items() if name in parts and isinstance(value, Mapping)}
    for name, config in built.items():
        path, target = f"{key}.{name}", config.get("_target_")
        if not isinstance(target, str) or target not in parts[name].targets:
            yield f"{path}._target_", target, f"the {name} may only be {parts[name].described}"
        nested = head_components() if name == "head" else None
        yield from refusals({k: v for k, v in config.items() if k != "_target_"}, path, in_part=True, nested=nested)
        if name == "backbone":
            yield from backbone_refusals(config, path)
    for name, value in arguments.items():
        if name not in built:
            yield from refusals({name: value}, key, in_part=name in parts)


def checkpoint_refusals(checkpoint: Mapping) -> Iterator[tuple[str, Any, str]]:
    """Refusals in the entries Lightning builds the model from."""
    name = checkpoint.get(ARGUMENTS_NAME)
    if name is not None:  # Lightning would pass all the arguments as this one
        yield ARGUMENTS_NAME, name, "facerec's checkpoints pass the model's arguments by their own names (None)"
    for key in ARGUMENT_KEYS:
        if key in checkpoint:
            yield from argument_refusals(checkpoint[key], key)


def check_hyperparameters(checkpoint: Mapping, source: str | Path) -> None:
    """Refuses a checkpoint (loaded ``weights_only``) whose hyper-parameters would build more than facerec's parts.

    Builds nothing. Raises CheckpointError naming ``source``, the first refused key (e.g.
    ``hyper_parameters.backbone._target_``) and its value.
    """
    refused = next(checkpoint_refusals(checkpoint), None)
    if refused is not None:
        path, value, why = refused
        raise CheckpointError(
            f"{source}: {path} = {shown(value)} is refused: {why.rstrip('.')}. facerec builds only its own "
            "backbones, necks, heads, optimizers and schedules from a checkpoint, so loading one runs no code"
        )
