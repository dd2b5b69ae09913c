"""Registry and Hydra configs: unknown names, and every ``conf/head/*.yaml`` builds a working head."""

from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from facerec.heads import HeadOutput, PartialFC, build_head, create_head, list_heads, registered_name
from tests.helpers import compose_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "head"
EXPECTED = [
    "adaface",
    "arcface",
    "arcface_center",
    "center",
    "combined",
    "cosface",
    "softmax",
    "subcenter_arcface",
]


def test_list_heads() -> None:
    assert list_heads() == EXPECTED


def test_unknown_name_lists_valid_heads() -> None:
    with pytest.raises(ValueError, match="unknown head 'nope'") as error:
        create_head("nope", 8, 5)
    assert all(name in str(error.value) for name in EXPECTED)


def test_every_head_has_a_yaml() -> None:
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == EXPECTED


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_yaml_targets_its_class_and_builds(path: Path) -> None:
    cfg = OmegaConf.to_container(compose_config(f"head={path.stem}").head, resolve=True)
    head_class = hydra.utils.get_class(cfg["_target_"])
    assert cfg["_target_"] == f"facerec.heads.{head_class.__name__}" and registered_name(head_class) == path.stem
    head = build_head(cfg, embedding_size=8, num_classes=5)
    assert type(head) is head_class
    out = head(torch.randn(4, 8, requires_grad=True), torch.tensor([0, 1, 2, 4]))
    assert isinstance(out, HeadOutput)
    assert out.loss.shape == () and out.logits.shape == (4, 5)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_configs_of_earlier_checkpoints_build_the_same_head() -> None:
    legacy = {"_target_": "facerec.heads.create_head", "name": "cosface", "margin": 0.3}
    legacy["partial_fc"] = {"enabled": True, "sample_rate": 1.0}
    head = build_head(legacy, embedding_size=8, num_classes=5)
    assert isinstance(head.classifier, PartialFC) and head.margin == 0.3
    legacy["partial_fc"] = {"enabled": False, "sample_rate": 1.0}  # what every other margin-head checkpoint holds
    head = build_head(legacy, embedding_size=8, num_classes=5)
    assert not isinstance(head.classifier, PartialFC) and head.margin == 0.3


def test_a_target_that_is_not_a_head_lists_the_head_classes() -> None:
    with pytest.raises(ValueError, match="torch.nn.Linear is not a registered head class; valid: .*ArcFaceHead"):
        build_head({"_target_": "torch.nn.Linear"}, embedding_size=8, num_classes=5)
