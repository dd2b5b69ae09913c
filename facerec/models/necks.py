"""Embedding necks: map a backbone's features to an ``embedding_size`` vector."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from facerec.models.checkpoint import load_embedding_net_weights
from facerec.models.layers import GDC, OutputLayer


class LinearNeck(OutputLayer):
    """IResNet's output layer on the un-pooled map (:class:`OutputLayer`; ``feature_shape`` (C, H, W) or (N, C))."""

    uses_pooled_features = False


class PoolFCNeck(nn.Module):
    """Backbone's own global pooling → FC → BN1d.

    Args:
        feature_shape: Per-sample shape of the pooled features, (C,).
        embedding_size: E.
        dropout: Dropout probability before the FC layer.
    """

    uses_pooled_features = True
    insightface_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, feature_shape: tuple[int, ...], embedding_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_shape[0], embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)

    def forward(self, features: Tensor) -> Tensor:
        """(B, C) → (B, E)."""
        return self.features(self.fc(self.dropout(features)))


class GDCNeck(GDC):
    """MobileFaceNet's GDC output layer on the un-pooled map (:class:`GDC`; ``feature_shape`` (C, H, W))."""

    uses_pooled_features = False


NECKS = (LinearNeck, PoolFCNeck, GDCNeck)
"""Neck classes a ``conf/neck`` config or a checkpoint's ``neck`` may name."""


class EmbeddingNet(nn.Module):
    """Backbone + neck: images (B, 3, H, W) → embeddings (B, E); used by eval and export.

    NHWC backbone features (``output_fmt == "NHWC"``, e.g. swin) are permuted to (B, C, h, w) for the neck.

    Args:
        backbone: A timm model built with ``num_classes=0``.
        neck: Neck factory taking ``feature_shape`` and ``embedding_size``.
        embedding_size: E.
        input_size: (H, W) of the input images; probed once for the feature shape.
        channels_last: Convert inputs to channels-last (for a backbone built with ``channels_last=True``).

    Raises:
        ValueError: The backbone cannot take ``input_size`` images.
    """

    def __init__(
        self, backbone: nn.Module, neck, embedding_size: int, input_size: tuple[int, int], channels_last: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels_last = channels_last
        self.embedding_size = embedding_size
        self.nhwc = getattr(backbone, "output_fmt", "NCHW") == "NHWC"
        self.pooled = getattr(neck, "func", neck).uses_pooled_features
        self.neck = neck(feature_shape=self._feature_shape(tuple(input_size)), embedding_size=embedding_size)

    @torch.no_grad()
    def _feature_shape(self, input_size: tuple[int, int]) -> tuple[int, ...]:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            features = self.features(torch.zeros(1, 3, *input_size))
        except (RuntimeError, AssertionError, ValueError) as error:
            name = getattr(self.backbone, "default_cfg", {}).get("architecture", type(self.backbone).__name__)
            raise ValueError(
                f"backbone {name} cannot take {input_size[0]}x{input_size[1]} images ({error}); "
                "choose a data.image_size the backbone supports (e.g. 112x112 for the face nets)"
            ) from error
        finally:
            self.backbone.train(was_training)
        return tuple(features.shape[1:])

    def features(self, images: Tensor) -> Tensor:
        """Backbone features as the neck expects them: pooled (B, C), map (B, C, h, w) or tokens (B, N, C)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.backbone.forward_features(images)
        if self.pooled:
            return self.backbone.forward_head(features, pre_logits=True)
        return features.permute(0, 3, 1, 2) if self.nhwc else features

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, E) un-normalised embeddings."""
        return self.neck(self.features(images))


def embed_with_mirror(net: Callable[[Tensor], Tensor], images: Tensor, flip: bool) -> Tensor:
    """``net(images)``, plus ``net`` of the mirror images with ``flip`` (the evaluation protocol). (B, E)."""
    embeddings = net(images)
    if flip:
        embeddings = embeddings + net(images.flip(3))
    return embeddings


def build_embedding_net(backbone: dict, neck: dict, embedding_size: int, input_size: tuple[int, int]) -> EmbeddingNet:
    """Builds backbone + neck from ``conf/backbone`` and ``conf/neck`` dicts.

    The backbone's ``checkpoint_path`` is loaded into the whole net (insightface's output layer fills the
    neck; :func:`facerec.models.checkpoint.load_embedding_net_weights`). ``input_size`` is (H, W).
    """
    backbone = dict(backbone)
    checkpoint_path = backbone.pop("checkpoint_path", None)
    channels_last = bool(backbone.get("channels_last", False))
    net = EmbeddingNet(
        instantiate(backbone), instantiate(neck, _partial_=True), embedding_size, input_size, channels_last
    )
    if checkpoint_path:
        load_embedding_net_weights(net, checkpoint_path)
    return net
