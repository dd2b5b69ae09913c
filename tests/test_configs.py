"""Every config option composes, and config names match the code."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from tests.helpers import REPO

GROUPS = ["backbone", "neck", "head", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment"]
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((REPO / "conf" / group).glob("*.yaml"))]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose_train(f"{group}={option}")
    assert cfg.model._target_ == "facerec.module.FaceRecognitionModule"


def test_head_configs_are_named_like_their_files():
    for path in (REPO / "conf" / "head").glob("*.yaml"):
        assert compose_train(f"head={path.stem}").head.name == path.stem


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException, match="Available options") as error:
        compose_train("head=arcfase")
    assert "arcface" in str(error.value)
