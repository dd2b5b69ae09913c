"""Registry and Hydra configs: unknown names, and every ``conf/head/*.yaml`` builds a working head."""

from pathlib import Path

import hydra.utils
import pytest
import torch

from facerec.heads import HeadOutput, create_head, list_heads
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
def test_yaml_composes(path: Path) -> None:
    cfg = compose_config(f"head={path.stem}").head
    assert cfg._target_ == "facerec.heads.create_head"
    assert cfg.name == path.stem
    head = hydra.utils.instantiate(cfg, embedding_size=8, num_classes=5)
    out = head(torch.randn(4, 8, requires_grad=True), torch.tensor([0, 1, 2, 4]))
    assert isinstance(out, HeadOutput)
    assert out.loss.shape == () and out.logits.shape == (4, 5)
    out.loss.backward()
    assert torch.isfinite(out.loss)
