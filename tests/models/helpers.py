"""Shared helpers for the model tests."""

from __future__ import annotations

import torch

import facerec  # noqa: F401  (registers the face nets with timm)

FACE_NETS = (
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "iresnet200",
    "mobilefacenet",
    "mobilefacenet_large",
)
SMALL_FACE_NETS = ("iresnet18", "mobilefacenet")


def backbone_cfg(name: str, **options) -> dict:
    """A ``conf/backbone`` dict for ``name``."""
    return {"_target_": "facerec.models.create_backbone", "name": name, **options}


def neck_cfg(kind: str = "linear", dropout: float = 0.0) -> dict:
    """A ``conf/neck`` dict."""
    target = {"linear": "LinearNeck", "pool_fc": "PoolFCNeck", "gdc": "GDCNeck"}[kind]
    return {"_target_": f"facerec.models.{target}", "dropout": dropout}


def randomize_norm_stats(module: torch.nn.Module) -> None:
    """Gives every norm layer non-trivial running stats and affine values, so loading errors show."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
