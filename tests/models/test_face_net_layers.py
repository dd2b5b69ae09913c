"""The shared face-net layers (GDC, insightface's output layer) and the :class:`FaceNet` timm contract.

Real compute runs at 32×32 (a 2×2 final map) to keep the CPU time small; the 112×112 shapes are checked
on the meta device.
"""

from __future__ import annotations

import pytest
import timm
import torch

from facerec.models import GDCNeck, LinearNeck
from facerec.models.face_net import FaceNet
from facerec.models.iresnet import IResNet
from facerec.models.layers import GDC, OutputLayer
from facerec.models.mobilefacenet import MobileFaceNet
from tests.models.helpers import SMALL_FACE_NETS, randomize_norm_stats

# (C, H / r) of every stage output (stem first) at 32×32 and 112×112.
STAGES = {
    "iresnet18": [(64, 1), (64, 2), (128, 4), (256, 8), (512, 16)],
    "mobilefacenet": [(128, 2), (128, 2), (128, 4), (256, 8), (512, 16)],
}


def make(name: str) -> FaceNet:
    model = timm.create_model(name, img_size=32)
    randomize_norm_stats(model)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "layer", "neck"), [("iresnet18", OutputLayer, LinearNeck), ("mobilefacenet", GDC, GDCNeck)]
)
def test_net_and_neck_share_the_layer(name: str, layer: type, neck: type) -> None:
    model = timm.create_model(name, img_size=32)
    assert isinstance(model, FaceNet)
    assert type(model.get_classifier()) is layer
    assert isinstance(neck(feature_shape=(512, 2, 2), embedding_size=64), layer)
    assert not any(key.startswith("head.") for key in model.state_dict())


@pytest.mark.parametrize("name", SMALL_FACE_NETS)
def test_state_dict_round_trip_is_strict(name: str) -> None:
    """insightface's keys out of ``state_dict`` load back with ``strict=True`` into a fresh net."""
    source = make(name)
    target = timm.create_model(name, img_size=32).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    assert list(target.state_dict()) == list(source.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def with_intermediates(name: str, batch: int) -> tuple[FaceNet, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A small net, a random (batch, 3, 32, 32) input and its ``forward_intermediates`` (final map, stage maps)."""
    model = make(name)
    x = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
    return model, x, final, intermediates


@pytest.mark.parametrize("name", SMALL_FACE_NETS)
def test_forward_intermediates(name: str) -> None:
    model, x, final, intermediates = with_intermediates(name, 2)
    with torch.no_grad():
        assert [tuple(f.shape) for f in intermediates] == [(2, c, 32 // r, 32 // r) for c, r in STAGES[name]]
        assert [f.shape[1] for f in intermediates] == [info["num_chs"] for info in model.feature_info]
        assert [32 // f.shape[-1] for f in intermediates] == [info["reduction"] for info in model.feature_info]
        assert torch.equal(final, model.forward_features(x))
        assert torch.equal(model.forward_head(final), model(x))

        assert model.forward_intermediates(x, indices=2, intermediates_only=True)[0].shape[1] == STAGES[name][3][0]
        some = model.forward_intermediates(x, indices=[-1, 1], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(some, (intermediates[1], intermediates[4]), strict=True))
        early = model.forward_intermediates(x, indices=[0, 2], stop_early=True)
        assert torch.equal(early[0], intermediates[2])
        assert all(torch.equal(a, b) for a, b in zip(early[1], (intermediates[0], intermediates[2]), strict=True))
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", SMALL_FACE_NETS)
def test_forward_intermediates_at_112(name: str) -> None:
    with torch.device("meta"):
        model = timm.create_model(name)
        final, intermediates = model.forward_intermediates(torch.zeros(1, 3, 112, 112))
    assert [tuple(f.shape) for f in intermediates] == [(1, c, 112 // r, 112 // r) for c, r in STAGES[name]]
    assert final.shape == (1, 512, 7, 7)


@pytest.mark.parametrize(
    "model_fn",
    [lambda: IResNet((1, 1, 1, 1), num_classes=0), lambda: MobileFaceNet((1, 1, 1, 1), scale=1, num_classes=0)],
    ids=["iresnet", "mobilefacenet"],
)
def test_forward_intermediates_with_grad_checkpointing(model_fn) -> None:
    model = model_fn()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    reference = model.forward_intermediates(x, intermediates_only=True)
    model.set_grad_checkpointing(True)
    output = model.forward_intermediates(x, intermediates_only=True)
    assert all(torch.allclose(a, b) for a, b in zip(output, reference, strict=True))
    sum(f.sum() for f in output).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", SMALL_FACE_NETS)
def test_prune_intermediate_layers(name: str) -> None:
    model, x, _, reference = with_intermediates(name, 1)
    with torch.no_grad():
        assert model.prune_intermediate_layers([1, 2]) == [1, 2]
        final, intermediates = model.forward_intermediates(x, indices=[1, 2])
    assert all(torch.equal(a, b) for a, b in zip(intermediates, reference[1:3], strict=True))
    assert torch.equal(final, reference[2])
    assert model.num_classes == 0
    assert model.num_features == STAGES[name][2][0]
    stage_keys = ("layer3.", "layer4.") if name == "iresnet18" else ("layers.4.", "layers.7.", "conv_sep.")
    assert not any(key.startswith((*stage_keys, "fc.", "features.")) for key in model.state_dict())
