"""create_backbone options, generic timm models with every neck, and the conf/ files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import save_file

from facerec.models import build_embedding_net, create_backbone
from tests.helpers import compose_config
from tests.models.helpers import backbone_cfg, neck_cfg

CONF = Path(__file__).parents[2] / "conf"
BACKBONE_KEYS = {"_target_", "name", "pretrained", "checkpoint_path", "drop_path_rate", "grad_checkpointing"}


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'not_a_net'.*timm\.list_models") as error:
        create_backbone("not_a_net")
    assert "did you mean" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("resnet18x", ["resnet18", "resnet18d"]),
        ("iresnet_50", ["iresnet50"]),
        ("mobilefacenet_larg", ["mobilefacenet_large", "mobilefacenet"]),
        ("swin_tiny", ["swin_tiny_patch4_window7_224"]),
        ("resnet18.a1_in1", ["resnet18.a1_in1k"]),
    ],
)
def test_unknown_name_suggests_close_matches(name: str, suggested: list[str]) -> None:
    with pytest.raises(ValueError, match=rf"unknown backbone '{re.escape(name)}'.*timm\.list_models") as error:
        create_backbone(name)
    matches = re.search(r"did you mean: (.*)\?", str(error.value)).group(1).split(", ")
    assert matches[: len(suggested)] == suggested
    assert len(matches) <= 5


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_pretrained_not_cached(empty_caches: Path) -> None:
    with pytest.raises(RuntimeError, match="not in the local cache") as error:
        create_backbone("test_resnet", pretrained=True)
    assert str(empty_caches / "hf") in str(error.value)


def test_pretrained_face_net_has_no_timm_weights() -> None:
    with pytest.raises(RuntimeError, match=r"no pretrained weights for 'iresnet18'.*checkpoint_path"):
        create_backbone("iresnet18", pretrained=True)


def test_pretrained_from_cache(empty_caches: Path) -> None:
    """Weights in the hub cache's layout (refs/main → snapshots/<rev>/model.safetensors) are loaded."""
    source = timm.create_model("test_resnet")
    repo = empty_caches / "hf" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(source.state_dict(), repo / "snapshots" / ("0" * 40) / "model.safetensors")
    model = create_backbone("test_resnet", pretrained=True)
    torch.testing.assert_close(model.conv1[0].weight, source.conv1[0].weight)
    assert model.num_classes == 0


def test_channels_last() -> None:
    model = create_backbone("test_resnet", channels_last=True)
    assert model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["test_resnet", "iresnet18"])
def test_grad_checkpointing_flag(name: str) -> None:
    assert create_backbone(name, grad_checkpointing=True).grad_checkpointing
    assert not create_backbone(name).grad_checkpointing


def test_drop_path_rate() -> None:
    model = create_backbone("resnet10t", drop_path_rate=0.1)
    assert any(isinstance(m, timm.layers.DropPath) and m.drop_prob > 0 for m in model.modules())
    assert not any(isinstance(m, timm.layers.DropPath) for m in create_backbone("resnet10t").modules())


@pytest.mark.parametrize("neck", ["linear", "pool_fc"])
@pytest.mark.parametrize(("name", "options"), [("test_vit", {"img_size": 64}), ("test_convnext", {})])
def test_generic_timm_backbone(name: str, options: dict, neck: str) -> None:
    net = build_embedding_net(backbone_cfg(name, **options), neck_cfg(neck), 32, (64, 64))
    embeddings = net(torch.randn(2, 3, 64, 64))
    assert embeddings.shape == (2, 32)
    embeddings.sum().backward()
    assert net.backbone.forward_features(torch.zeros(1, 3, 64, 64)).requires_grad


@pytest.mark.parametrize("neck", ["linear", "gdc", "pool_fc"])
def test_channels_last_backbone(neck: str) -> None:
    """timm's NHWC backbones (swin, mambaout, ...) give the neck a channels-first (B, C, h, w) map.

    64×32 images give test_mambaout (stride 32, 64 channels) a (2, 1) map, so no two axes have the same size.
    """
    net = build_embedding_net(backbone_cfg("test_mambaout"), neck_cfg(neck), 16, (64, 32))
    assert net.backbone.output_fmt == "NHWC"
    images = torch.randn(2, 3, 64, 32)
    raw = net.backbone.forward_features(images)
    assert raw.shape == (2, 2, 1, 64)
    if neck == "pool_fc":  # the backbone's own head pools its NHWC map (then a 64 → 256 MLP)
        torch.testing.assert_close(net.features(images), net.backbone.forward_head(raw, pre_logits=True))
        assert net.neck.fc.in_features == net.backbone.head_hidden_size == 256
    else:
        assert net.neck.bn.num_features == 64
        torch.testing.assert_close(net.features(images), raw.permute(0, 3, 1, 2))
    if neck == "gdc":
        assert net.neck.conv.weight.shape == (64, 1, 2, 1)
    embeddings = net(images)
    assert embeddings.shape == (2, 16)
    embeddings.square().sum().backward()
    assert net.backbone.stem.conv1.weight.grad.abs().sum() > 0


def test_gdc_neck_needs_a_map() -> None:
    with pytest.raises(ValueError, match=r"GDCNeck needs a \(C, H, W\) feature map"):
        build_embedding_net(backbone_cfg("test_vit", img_size=64), neck_cfg("gdc"), 32, (64, 64))


@pytest.mark.parametrize("path", sorted((CONF / "backbone").glob("*.yaml")), ids=lambda p: p.stem)
def test_backbone_configs(path: Path) -> None:
    """Presets are ``defaults: [timm]`` + the name and what differs; composed, each names a timm model."""
    own = OmegaConf.load(path)
    if path.stem != "timm":
        assert list(own.defaults) == ["timm", "_self_"]
        generic = OmegaConf.load(CONF / "backbone" / "timm.yaml")
        assert not [key for key in own if key != "defaults" and key in generic and own[key] == generic[key]]
    cfg = compose_config(f"backbone={path.stem}").backbone
    assert BACKBONE_KEYS | {"channels_last"} <= set(cfg)
    assert cfg._target_ == "facerec.models.create_backbone"
    assert OmegaConf.is_missing(cfg, "name") if path.stem == "timm" else timm.is_model(cfg.name)
    if set(cfg) - BACKBONE_KEYS - {"channels_last"}:  # extra timm.create_model arguments: they must build
        assert isinstance(instantiate(cfg), torch.nn.Module)


@pytest.mark.parametrize("path", sorted((CONF / "neck").glob("*.yaml")), ids=lambda p: p.stem)
def test_neck_configs_build(path: Path) -> None:
    backbone = OmegaConf.to_container(OmegaConf.load(CONF / "backbone" / "timm.yaml"))
    backbone["name"] = "test_resnet"
    neck = OmegaConf.to_container(OmegaConf.load(path))
    net = build_embedding_net(backbone, neck, 16, (32, 32))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 16)


@pytest.mark.parametrize(
    ("overrides", "name", "neck"),
    [
        (["backbone=timm", "backbone.name=test_convnext", "neck=pool_fc"], "test_convnext", "PoolFCNeck"),
        (["backbone=mobilefacenet", "neck=gdc"], "mobilefacenet", "GDCNeck"),
        (["backbone.name=test_vit", "+backbone.img_size=32"], "test_vit", "LinearNeck"),
    ],
)
def test_hydra_overrides(overrides: list[str], name: str, neck: str, tmp_path: Path) -> None:
    """The command-line forms of the README, composed against a minimal primary config."""
    (tmp_path / "config.yaml").write_text(
        f"defaults:\n  - backbone: iresnet50\n  - neck: linear\n  - _self_\nhydra:\n  searchpath:\n    - file://{CONF}\n"
    )
    cfg = compose_config(*overrides, config_name="config", config_dir=tmp_path)
    net = build_embedding_net(OmegaConf.to_container(cfg.backbone), OmegaConf.to_container(cfg.neck), 16, (32, 32))
    assert net.backbone.pretrained_cfg["architecture"] == name
    assert type(net.neck).__name__ == neck
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 16)
