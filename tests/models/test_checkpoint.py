"""insightface ``backbone.pth`` → facerec mapping, checked numerically on state dicts saved here.

``timm.create_model("iresnet18")`` (512-d output layer) has exactly insightface's module names, so its
state dict stands in for an insightface ``backbone.pth``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from facerec.models import build_embedding_net, create_backbone
from tests.models.helpers import backbone_cfg, neck_cfg, randomize_norm_stats

INSIGHTFACE_IR18_KEYS = [  # a sample of insightface iresnet.py's keys
    "conv1.weight",
    "bn1.running_mean",
    "prelu.weight",
    "layer1.0.bn1.weight",
    "layer1.0.conv1.weight",
    "layer1.0.prelu.weight",
    "layer1.0.conv2.weight",
    "layer1.0.bn3.running_var",
    "layer1.0.downsample.0.weight",
    "layer1.0.downsample.1.num_batches_tracked",
    "layer4.1.bn3.bias",
    "bn2.running_var",
    "fc.weight",
    "fc.bias",
    "features.weight",
    "features.running_mean",
]
INSIGHTFACE_MBF_KEYS = [  # a sample of insightface mobilefacenet.py's keys
    "layers.0.layers.0.weight",
    "layers.1.layers.2.weight",
    "layers.2.layers.1.layers.0.weight",
    "layers.3.layers.3.layers.2.layers.1.running_var",
    "layers.7.layers.1.layers.2.layers.0.weight",
    "conv_sep.layers.2.weight",
    "features.layers.0.layers.0.weight",
    "features.layers.0.layers.1.bias",
    "features.layers.2.weight",
    "features.layers.3.running_mean",
]


def save_insightface_checkpoint(name: str, path: Path, img_size: int) -> torch.nn.Module:
    """Saves the state dict of a full face net (insightface layout) and returns the net in eval mode."""
    model = timm.create_model(name, img_size=img_size)
    randomize_norm_stats(model)
    torch.save(model.state_dict(), path)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "neck", "keys"),
    [("iresnet18", "linear", INSIGHTFACE_IR18_KEYS), ("mobilefacenet", "gdc", INSIGHTFACE_MBF_KEYS)],
)
def test_insightface_checkpoint_gives_identical_network(name: str, neck: str, keys: list, tmp_path: Path) -> None:
    path = tmp_path / "backbone.pth"
    reference = save_insightface_checkpoint(name, path, img_size=32)
    assert set(keys) <= set(torch.load(path, weights_only=True))

    net = build_embedding_net(backbone_cfg(name, checkpoint_path=str(path)), neck_cfg(neck), 512, (32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x))


def test_facerec_checkpoint_round_trip(tmp_path: Path) -> None:
    net = build_embedding_net(backbone_cfg("test_resnet"), neck_cfg("pool_fc"), 64, (32, 32))
    randomize_norm_stats(net)
    torch.save(net.state_dict(), tmp_path / "net.pth")
    loaded = build_embedding_net(
        backbone_cfg("test_resnet", checkpoint_path=str(tmp_path / "net.pth")),
        neck_cfg("pool_fc"),
        64,
        (32, 32),
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), net.eval()(x))


def test_mismatched_checkpoint_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "backbone.pth"
    torch.save(timm.create_model("mobilefacenet", img_size=32).state_dict(), path)
    with pytest.raises(RuntimeError, match=r"missing keys: \['neck\.bn\.weight'") as error:
        build_embedding_net(backbone_cfg("mobilefacenet", checkpoint_path=str(path)), neck_cfg("linear"), 512, (32, 32))
    assert "unexpected keys: ['neck.features.layers.0.layers.0.weight'" in str(error.value)


def test_timm_and_create_backbone_load_insightface_checkpoint(tmp_path: Path) -> None:
    """timm's own ``checkpoint_path`` loads the full net; ``create_backbone`` the backbone part."""
    path = tmp_path / "backbone.pth"
    reference = save_insightface_checkpoint("mobilefacenet", path, img_size=32)
    model = timm.create_model("mobilefacenet", img_size=32, checkpoint_path=str(path)).eval()
    backbone = create_backbone("mobilefacenet", checkpoint_path=str(path)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
        torch.testing.assert_close(backbone.forward_features(x), reference.forward_features(x))
