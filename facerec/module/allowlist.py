"""What a checkpoint may build: its hyper-parameters name only facerec's own parts, checked before any is built.

:meth:`FaceRecognitionModule.load_from_checkpoint <facerec.module.FaceRecognitionModule.load_from_checkpoint>`
builds the model from the checkpoint's hyper-parameters, whose parts are Hydra configs. A crafted
``_target_`` (``torch.load``, ``os.system``, ...) would run when the part is built, so every part's
``_target_`` is compared, as a string and without importing anything, with the parts facerec builds: the
backbone factory (with a timm model name), the neck classes, the registered heads, torch's optimizers and
the LR schedule. Any other key starting with ``_`` (Hydra's ``_target_``, ``_partial_``, ``_args_``,
``_recursive_``, ``_convert_``; Lightning's ``_instantiator``), at any depth, any ``${...}``
interpolation in a part, backbone weight sources (a checkpoint holds its own weights) and Lightning's
``hparams_name`` are refused.
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
from facerec.heads.build import LEGACY_TARGET
from facerec.heads.registry import head_class, list_heads
from facerec.models.backbone import WEIGHT_SOURCES, check_backbone_name, create_backbone
from facerec.models.necks import NECKS
from facerec.module.schedule import LEGACY_SCHEDULE, WarmupDecay

ARGUMENT_KEYS = (*CHECKPOINT_PAST_HPARAMS_KEYS, LightningModule.CHECKPOINT_HYPER_PARAMS_KEY)
"""The checkpoint entries Lightning's ``load_from_checkpoint`` reads the model's arguments from."""
ARGUMENTS_NAME = LightningModule.CHECKPOINT_HYPER_PARAMS_NAME
"""The entry that, if set, makes Lightning pass all the arguments as the one of that name."""

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
    """The ``_target_`` strings one part of the model may hold, and how a message names them."""

    targets: frozenset[str]
    described: str


def part(objects: Sequence[Any], package: str, *legacy: str, described: str | None = None) -> Part:
    """The part built by one of ``objects``, named from ``package`` (its re-export) or its defining module."""
    public = sorted(f"{package}.{obj.__qualname__}" for obj in objects)
    defined = {f"{obj.__module__}.{obj.__qualname__}" for obj in objects}
    return Part(frozenset({*public, *defined, *legacy}), described or ", ".join([*public, *legacy]))


def allowed_parts() -> dict[str, Part]:
    """The parts of :class:`~facerec.module.FaceRecognitionModule`'s arguments and what each may be.

    Read from the registries at each call, so a head registered by the user's code is allowed.
    """
    optimizers = [
        obj
        for obj in vars(torch.optim).values()
        if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
    ]
    return {
        "backbone": part([create_backbone], "facerec.models"),
        "neck": part(NECKS, "facerec.models"),
        "head": part([head_class(name) for name in list_heads()], "facerec.heads", LEGACY_TARGET),
        "optimizer": part(optimizers, "torch.optim", described="a torch.optim optimizer (e.g. torch.optim.SGD)"),
        "scheduler": part([WarmupDecay], "facerec.module", LEGACY_SCHEDULE),
    }


def refusals(value: Any, path: str, in_part: bool) -> Iterator[tuple[str, Any, str]]:
    """Every key or value at or below ``path`` that a checkpoint may not hold: (key path, value, why)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and key.startswith("_"):
                yield f"{path}.{key}", item, INSTRUCTION
            else:
                yield from refusals(item, f"{path}.{key}", in_part)
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from refusals(item, f"{path}[{index}]", in_part)
    elif in_part and isinstance(value, str) and "${" in value:
        yield path, value, INTERPOLATION


def backbone_refusals(config: Mapping, path: str) -> Iterator[tuple[str, Any, str]]:
    """A backbone config's weight sources (each must be off) and its ``name`` (a timm model)."""
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
    """What the model's arguments ``arguments`` (the checkpoint's entry ``key``) may not hold."""
    if not isinstance(arguments, Mapping):
        yield key, arguments, "the model's arguments must be a mapping"
        return
    parts = allowed_parts()
    built = {name: value for name, value in arguments.items() if name in parts and isinstance(value, Mapping)}
    for name, config in built.items():
        path, target = f"{key}.{name}", config.get("_target_")
        if not isinstance(target, str) or target not in parts[name].targets:
            yield f"{path}._target_", target, f"the {name} may only be {parts[name].described}"
        yield from refusals({k: v for k, v in config.items() if k != "_target_"}, path, in_part=True)
        if name == "backbone":
            yield from backbone_refusals(config, path)
    for name, value in arguments.items():
        if name not in built:
            yield from refusals({name: value}, key, in_part=name in parts)


def checkpoint_refusals(checkpoint: Mapping) -> Iterator[tuple[str, Any, str]]:
    """What a checkpoint may not hold in the entries Lightning builds the model from."""
    name = checkpoint.get(ARGUMENTS_NAME)
    if name is not None:  # Lightning would pass all the arguments as this one
        yield ARGUMENTS_NAME, name, "facerec's checkpoints pass the model's arguments by their own names (None)"
    for key in ARGUMENT_KEYS:
        if key in checkpoint:
            yield from argument_refusals(checkpoint[key], key)


def check_hyperparameters(checkpoint: Mapping, source: str | Path) -> None:
    """Refuses a checkpoint whose hyper-parameters would build anything but facerec's own parts.

    Nothing is imported, resolved or built.

    Args:
        checkpoint: The loaded checkpoint (``torch.load(..., weights_only=True)``).
        source: Its path, for the message.

    Raises:
        CheckpointError: Naming the first refused key (e.g. ``hyper_parameters.backbone._target_``) and its value.
    """
    refused = next(checkpoint_refusals(checkpoint), None)
    if refused is not None:
        path, value, why = refused
        raise CheckpointError(
            f"{source}: {path} = {shown(value)} is refused: {why.rstrip('.')}. facerec builds only its own "
            "backbones, necks, heads, optimizers and schedules from a checkpoint, so loading one runs no code"
        )
