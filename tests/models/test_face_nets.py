"""The face nets registered with timm: registry, architecture, parameter counts, timm interface.

Parameter counts (with the 512-d output layer, i.e. ``timm.create_model(name)``; frozen BN1d scale
included) are checked twice: against closed-form counts derived from insightface's
``recognition/arcface_torch/backbones/{iresnet,mobilefacenet}.py`` definitions, and against published
figures:

- IR-50 ≈ 43.6 M (insightface arcface_torch r50);
- IR-100 65.132 M (OpenVINO Open Model Zoo ``face-recognition-resnet100-arcface-onnx``, the MXNet
  ArcFace r100; within 0.1 %);
- MobileFaceNet 0.99 M at width 1 / 128-d (Chen et al. 2018, arXiv:1804.07573; 1.003 M here, within
  2 %) and ≈ 2 M for insightface's ``mbf`` (width 2, 512-d).
"""

from __future__ import annotations

import pytest
import timm
import torch

from facerec.models import build_embedding_net
from facerec.models.iresnet import IResNet
from facerec.models.mobilefacenet import MobileFaceNet
from tests.models.helpers import FACE_NETS, SMALL_FACE_NETS, backbone_cfg, neck_cfg

IRESNET_LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
# Exact counts of timm.create_model(name) (512-d output layer), as the formulas below give them.
EXPECTED_PARAMS = {
    "iresnet18": 24_025_600,
    "iresnet34": 34_139_328,
    "iresnet50": 43_590_848,
    "iresnet100": 65_156_160,
    "iresnet200": 118_833_920,
    "mobilefacenet": 2_059_520,
    "mobilefacenet_large": 6_314_880,
}
MOBILEFACENET_ARGS = {"mobilefacenet": ((1, 4, 6, 2), 2), "mobilefacenet_large": ((2, 8, 12, 4), 4)}


def iresnet_params(layers: tuple[int, ...], embedding: int = 512, final_area: int = 49) -> int:
    """IR parameter count: stem conv+BN+PReLU, units BN-conv-BN-PReLU-conv-BN (+1×1 proj), output layer."""
    count = 3 * 64 * 9 + 3 * 64
    in_c = 64
    for depth, c in zip(layers, (64, 128, 256, 512), strict=True):
        for i in range(depth):
            count += 2 * in_c + in_c * c * 9 + 3 * c + c * c * 9 + 2 * c
            count += in_c * c + 2 * c if i == 0 else 0
            in_c = c
    return count + 2 * 512 + 512 * final_area * embedding + embedding + 2 * embedding


def mobilefacenet_params(blocks: tuple[int, ...], scale: int, embedding: int = 512) -> int:
    """MobileFaceNet parameter count from its blocks (conv weights + 2 BN + PReLU per ConvBlock)."""

    def conv_block(c_in: int, c_out: int, k: int = 1, groups: int = 1, prelu: bool = True) -> int:
        return c_in // groups * c_out * k * k + (3 if prelu else 2) * c_out

    def depthwise(c_in: int, c_out: int, hidden: int) -> int:
        return conv_block(c_in, hidden) + conv_block(hidden, hidden, 3, hidden) + conv_block(hidden, c_out, prelu=False)

    c1, c2 = 64 * scale, 128 * scale
    first = conv_block(c1, c1, 3, 64) if blocks[0] == 1 else blocks[0] * depthwise(c1, c1, 128)
    count = conv_block(3, c1, 3) + first
    count += depthwise(c1, c1, 128) + blocks[1] * depthwise(c1, c1, 128)
    count += depthwise(c1, c2, 256) + blocks[2] * depthwise(c2, c2, 256)
    count += depthwise(c2, c2, 512) + blocks[3] * depthwise(c2, c2, 256)
    count += conv_block(c2, 512)
    return count + conv_block(512, 512, 7, 512, prelu=False) + 512 * embedding + 2 * embedding


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_with_timm() -> None:
    assert sorted(timm.list_models("iresnet*")) == sorted(n for n in FACE_NETS if n.startswith("iresnet"))
    assert timm.list_models("mobilefacenet*") == ["mobilefacenet", "mobilefacenet_large"]


@pytest.mark.parametrize("name", FACE_NETS)
def test_pretrained_cfg(name: str) -> None:
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.input_size == (3, 112, 112)
    assert cfg.mean == cfg.std == (0.5, 0.5, 0.5)
    assert cfg.num_classes == 512


@pytest.mark.parametrize("name", FACE_NETS)
def test_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = timm.create_model(name)
    if name in IRESNET_LAYERS:
        expected = iresnet_params(IRESNET_LAYERS[name])
    else:
        expected = mobilefacenet_params(*MOBILEFACENET_ARGS[name])
    assert n_params(model) == expected == EXPECTED_PARAMS[name]


@pytest.mark.parametrize(
    ("build", "published", "rel"),
    [
        (lambda: timm.create_model("iresnet50"), 43.6e6, 1e-3),
        (lambda: timm.create_model("iresnet100"), 65.132e6, 1e-3),
        (lambda: timm.create_model("mobilefacenet"), 2e6, 0.05),
        # The paper's width-1, 128-d net; the 1.3 % gap is BN/PReLU bookkeeping.
        (lambda: MobileFaceNet(scale=1, num_classes=128), 0.99e6, 0.02),
    ],
    ids=["iresnet50", "iresnet100", "mobilefacenet", "mobilefacenet_paper"],
)
def test_published_parameter_counts(build, published: float, rel: float) -> None:
    """Nets built on the meta device (no memory, no init compute) match the published sizes."""
    with torch.device("meta"):
        model = build()
    assert n_params(model) == pytest.approx(published, rel=rel)


DEEPEST = {"iresnet100", "iresnet200"}  # seconds each even on the meta device: the slow lane builds them


@pytest.mark.parametrize("neck", ["linear", "pool_fc", "gdc"])
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] if name in DEEPEST else []) for name in FACE_NETS]
)
def test_embedding_shapes(name: str, neck: str) -> None:
    """Forward and backward at 112×112 on the meta device: shapes only, no compute, so every net is covered."""
    with torch.device("meta"):
        net = build_embedding_net(backbone_cfg(name), neck_cfg(neck), 128, (112, 112))
        neck_inputs = []
        net.neck.register_forward_pre_hook(lambda _, args: neck_inputs.append(args[0].shape))
        embeddings = net(torch.zeros(2, 3, 112, 112))
        embeddings.sum().backward()
    assert neck_inputs == [(2, 512) if neck == "pool_fc" else (2, 512, 7, 7)]
    assert embeddings.shape == (2, 128)
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.shape == p.shape for p in trainable)


@pytest.mark.parametrize("name", SMALL_FACE_NETS)
def test_forward_backward(name: str) -> None:
    """Real compute, at 32×32 (2×2 final map) to keep the CPU time small."""
    neck = "gdc" if name.startswith("mobilefacenet") else "linear"
    net = build_embedding_net(backbone_cfg(name), neck_cfg(neck, dropout=0.2), 64, (32, 32))
    embeddings = net(torch.randn(2, 3, 32, 32))
    assert embeddings.shape == (2, 64)
    assert torch.isfinite(embeddings).all()
    embeddings.square().sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first_conv = net.backbone.get_submodule(net.backbone.pretrained_cfg["first_conv"])
    assert first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SMALL_FACE_NETS)
def test_timm_interface(name: str) -> None:
    model = timm.create_model(name, img_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, model.num_features, 2, 2) == (1, 512, 2, 2)
        assert model(x).shape == (1, 512)
        assert model.forward_head(features, pre_logits=True).shape == (1, 512)
        model.reset_classifier(10)
        assert model.eval()(x).shape == (1, 10)
        assert model.get_classifier() is not None
        model.reset_classifier(0)
        assert model(x).shape == (1, 512)
        assert not any(key.startswith(("bn2.", "fc.", "features.")) for key in model.state_dict())


@pytest.mark.parametrize(
    "model_fn",
    [
        lambda: IResNet((1, 1, 1, 1), num_classes=0),
        lambda: MobileFaceNet((1, 1, 1, 1), scale=1, num_classes=0),
    ],
    ids=["iresnet", "mobilefacenet"],
)
def test_grad_checkpointing_same_result(model_fn) -> None:
    """Same outputs and gradients with checkpointing (one unit per stage keeps it cheap)."""
    model = model_fn()
    x = torch.randn(2, 3, 16, 16)
    reference = model(x)
    reference.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    output = model(x)
    output.sum().backward()
    torch.testing.assert_close(output, reference)
    for p, g in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SMALL_FACE_NETS)
def test_drop_path(name: str) -> None:
    model = timm.create_model(name, num_classes=0, drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert rates
    assert max(rates) == pytest.approx(0.2)


@pytest.mark.parametrize("name", SMALL_FACE_NETS)
def test_features_only(name: str) -> None:
    model = timm.create_model(name, features_only=True)
    with torch.no_grad():
        features = model(torch.zeros(1, 3, 32, 32))
    assert [f.shape[1] for f in features] == model.feature_info.channels()
    assert [32 // f.shape[-1] for f in features] == model.feature_info.reduction()
