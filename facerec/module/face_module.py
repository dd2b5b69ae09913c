"""The LightningModule: embedding network (timm backbone + neck) and a pluggable head."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from facerec.data.transforms import check_crop
from facerec.errors import class_count_error
from facerec.heads import build_head
from facerec.heads.legacy import current_config
from facerec.models import build_embedding_net, embed_with_mirror
from facerec.models.backbone import WEIGHT_SOURCES
from facerec.models.checkpoint import load_strict
from facerec.module.checkpoint import read_training_checkpoint
from facerec.module.schedule import current_schedule
from facerec.module.strategy import ShardedCentresDDPStrategy

_LOADING: ContextVar[Path | None] = ContextVar("loading_checkpoint", default=None)
"""The file :meth:`FaceRecognitionModule.load_from_checkpoint` is reading (its sharded centres lie beside it)."""


def _plain(config: Mapping | None) -> dict | None:
    """Config as a plain dict (checkpoints hold only primitive hyper-parameters)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return None if config is None else dict(config)


def _plain_crop(crop: Any) -> float | list[int] | None:
    """``data.crop`` as float, list of ints or None."""
    crop = check_crop(crop)
    return list(crop) if isinstance(crop, tuple) else crop


def without_weight_sources(backbone: dict | None) -> dict | None:
    """Backbone config with weight-loading options off (the state dict holds the weights)."""
    if backbone is None:
        return None
    return {**backbone, **{key: value for key, value in WEIGHT_SOURCES.items() if key in backbone}}


def has_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether any parameter of ``optimizer`` has a gradient."""
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


class FaceRecognitionModule(L.LightningModule):
    """Images -> embeddings, trained by a classification head over identities.

    Each part is a ``_target_`` config (``conf/`` group of the same name) saved in the hyper-parameters, so
    :meth:`load_from_checkpoint` rebuilds the model from the checkpoint alone; the backbone's
    ``checkpoint_path``/``pretrained`` are used at first build and saved off.

    Args:
        backbone: ``conf/backbone``.
        neck: ``conf/neck``.
        head: ``conf/head``; built by :func:`~facerec.heads.build_head` with ``embedding_size``, ``num_classes``.
        optimizer: ``conf/optimizer``; instantiated with the parameter groups.
        scheduler: ``conf/scheduler`` (:class:`~facerec.module.schedule.WarmupDecay`), or None.
        num_classes: Training identities C.
        embedding_size: E.
        input_size: Input (H, W).
        input_crop: ``data.crop`` applied before resizing; kept so ``eval.py`` prepares images as in training.
        class_names: Identity names in label order.
        flip_test: Evaluation embedding = net(x) + net(mirror(x)).
        compile: ``torch.compile`` the backbone.
        with_head: Build the head (not saved; False: an embedding network only, see :meth:`load_embedding_net`).

    Raises:
        ValueError: ``class_names`` length differs from ``num_classes``.
    """

    def __init__(
        self,
        backbone: Mapping,
        neck: Mapping,
        head: Mapping,
        optimizer: Mapping,
        scheduler: Mapping | None,
        num_classes: int,
        embedding_size: int = 512,
        input_size: tuple[int, int] = (112, 112),
        input_crop: float | list[int] | None = None,
        class_names: list[str] | None = None,
        flip_test: bool = True,
        compile: bool = False,
        with_head: bool = True,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        backbone = _plain(backbone)
        head = current_config(_plain(head))  # a checkpoint's head config from before heads were composed: upgraded
        self.save_hyperparameters(
            {
                "backbone": without_weight_sources(backbone),
                "neck": _plain(neck),
                "head": head,
                "optimizer": _plain(optimizer),
                "scheduler": current_schedule(_plain(scheduler)),
                "num_classes": int(num_classes),
                "embedding_size": int(embedding_size),
                "input_size": [int(s) for s in input_size],
                "input_crop": _plain_crop(input_crop),
                "class_names": list(class_names) if class_names is not None else None,
                "flip_test": bool(flip_test),
                "compile": bool(compile),
            }
        )
        self.net = build_embedding_net(backbone, self.hparams.neck, embedding_size, tuple(input_size))
        if compile:
            self.net.backbone = torch.compile(self.net.backbone)
        self.head = build_head(self.hparams.head, embedding_size, num_classes) if with_head else None

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: str | Path, map_location: Any = None, strict: bool | None = None, **kwargs: Any
    ) -> FaceRecognitionModule:
        """Lightning's ``load_from_checkpoint`` (``weights_only``), once ``read_training_checkpoint`` passes the file
        (FileNotFoundError, CheckpointError); ``kwargs`` override hyper-parameters (e.g. ``flip_test``).
        """
        read_training_checkpoint(checkpoint_path)
        token = _LOADING.set(Path(checkpoint_path))
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location=map_location, strict=strict, weights_only=True, **kwargs
            )
        finally:
            _LOADING.reset(token)

    @classmethod
    def load_embedding_net(cls, checkpoint_path: str | Path, **overrides: Any) -> FaceRecognitionModule:
        """The checkpoint's model without its head, on the CPU in eval mode: for evaluation, inference and export.

        Reads only the embedding network's weights (the file is memory-mapped): class centres are never loaded
        nor created, whether the checkpoint holds them or its shard files do. ``overrides`` replace
        hyper-parameters (e.g. ``flip_test``).

        Raises:
            FileNotFoundError, CheckpointError: As :func:`~facerec.module.checkpoint.read_training_checkpoint`.
        """
        checkpoint = read_training_checkpoint(checkpoint_path)
        arguments = inspect.signature(cls.__init__).parameters
        hparams = {k: v for k, v in {**checkpoint["hyper_parameters"], **overrides}.items() if k in arguments}
        model = cls(**hparams, with_head=False)
        net = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        load_strict(model.net, net, checkpoint_path)
        return model.eval()

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, E) un-normalised embeddings."""
        return self.net(images)

    def embed(self, images: Tensor) -> Tensor:
        """(B, E) evaluation embeddings; with ``flip_test``, ``net(x) + net(mirror(x))``."""
        return embed_with_mirror(self.net, images, self.hparams.flip_test)

    def on_fit_start(self) -> None:
        """Refuses training data whose identity count differs from the head's."""
        datamodule = self.trainer.datamodule
        if datamodule is not None and datamodule.num_classes != self.hparams.num_classes:
            raise class_count_error(self.hparams.num_classes, datamodule.num_classes)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Refuses training labels outside [0, num_classes) while still on the host."""
        if self.trainer.training:
            labels = batch[1]
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.hparams.num_classes:
                bad = low if low < 0 else high
                raise ValueError(
                    f"training label {bad} is outside [0, {self.hparams.num_classes}): the head has "
                    f"{self.hparams.num_classes} classes. The dataset's labels must be 0..C-1 for its C identities "
                    "(data=folder and data=rec derive C from the data; a custom dataset or a .rec whose header "
                    "disagrees with its records does not)"
                )
        return batch

    def setup(self, stage: str) -> None:
        """Lets the head set up this rank (Partial FC shard); DDP ignores sharded parameters.

        Raises:
            ValueError: Sharded centres under a strategy that would not checkpoint them (not ``trainer=ddp``'s).
        """
        if self.head is None:  # an embedding network being evaluated
            return
        sharded = self.head.setup_distributed(self.trainer.global_rank, self.trainer.world_size)
        if sharded and self.trainer.world_size > 1 and not isinstance(self.trainer.strategy, ShardedCentresDDPStrategy):
            raise ValueError(
                f"classifier=partial_fc across {self.trainer.world_size} processes needs facerec's DDP strategy, "
                f"which checkpoints each rank's class centres (trainer=ddp or trainer=ddp_sim; in your own trainer "
                f"config: strategy: {{_target_: facerec.module.ShardedCentresDDPStrategy}}); "
                f"not {type(self.trainer.strategy).__name__}"
            )
        if sharded:
            self._ddp_params_and_buffers_to_ignore = [f"head.{name}" for name in sharded]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lets the head store world-size-independent state (Partial FC: all centres)."""
        optimizers = self._trainer.optimizers if self._trainer is not None else []  # saved without a Trainer
        self.head.on_save_checkpoint("head.", checkpoint, optimizers)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a checkpoint trained on another identity count, then lets the head prepare its state
        (:meth:`~facerec.heads.Head.on_load_checkpoint`; ``resuming`` when a trainer will load the optimizer)."""
        saved = checkpoint.get("hyper_parameters", {}).get("num_classes", self.hparams.num_classes)
        if saved != self.hparams.num_classes:
            raise class_count_error(saved, self.hparams.num_classes)
        resuming = self._trainer is not None
        source = self._trainer.ckpt_path if resuming else _LOADING.get()
        self.head.on_load_checkpoint("head.", checkpoint, resuming=resuming, source=source)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        output = self.head(self.net(images), labels)
        self.log("train/loss", output.loss, prog_bar=True)
        if self.head.full_logits:
            accuracy = (output.logits.argmax(dim=1) == labels).float().mean()
            self.log("train/acc", accuracy, prog_bar=True)
        return output.loss

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: torch.optim.Optimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Steps, then lets heads with non-gradient state update once per optimizer step.

        The head's update is marked skipped when the step changed nothing: no gradients
        (:class:`~facerec.callbacks.NonFiniteLossGuard` ``skip=True``) or the fp16 scaler lowered its scale.
        """
        updates = self.head.updates_after_step
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if updates else None
        scale = scaler.get_scale() if scaler is not None else None
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if updates:
            scaler_skipped = scale is not None and scaler.get_scale() < scale
            self.head.after_optimizer_step(skipped=scaler_skipped or not has_gradients(optimizer))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Lets the head prepare the step (Partial FC r < 1: sampled centres' state)."""
        self.head.before_optimizer_step(optimizer)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping; with sharded Partial FC, norm clipping uses the global gradient norm so ranks agree."""
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if self.head.clip_grad_norm_(params, gradient_clip_val):
                return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Embeds verification images for the verification callback."""
        images, index = batch
        return {"embeddings": self.embed(images).float(), "index": index}

    def configure_optimizers(self) -> dict:
        """Optimizer over net + head (trainable only), LR schedule stepped per optimizer step.

        Raises ValueError for a schedule without finite max_epochs/max_steps.
        """
        groups = [{"params": list(self.net.parameters())}, *self.head.param_groups()]
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
        optimizer = instantiate(self.hparams.optimizer, _partial_=True)([g for g in groups if g["params"]])
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        total_steps = self.trainer.estimated_stepping_batches
        if math.isinf(total_steps):
            raise ValueError("an LR schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
        batches = self.trainer.num_training_batches
        steps_per_epoch = total_steps if math.isinf(batches) else batches // self.trainer.accumulate_grad_batches
        steps_per_epoch = max(int(steps_per_epoch), 1)
        factor = instantiate(self.hparams.scheduler, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
