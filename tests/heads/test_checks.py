"""Head parameters are checked when the head is built: names, types and ranges, with messages naming them."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from facerec.heads import build_head, create_head
from facerec.heads.checks import check_range
from tests.helpers import compose_config, run_entry_point


def head_config(name: str, **values) -> dict:
    """``conf/head/<name>.yaml`` as a plain dict, with ``values`` set at their dotted keys below ``head``."""
    config = compose_config(f"head={name}").head
    for key, value in values.items():
        OmegaConf.update(config, key, value)
    return OmegaConf.to_container(config, resolve=True)


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("arcface", {"margin": "abc"}, r"head.margin.margin=abc has type str; ArcFace needs float"),
        ("cosface", {"scale": True}, r"head.margin.scale=True has type bool; CosFace needs float"),
        (
            "arcface",
            {"subcenters": 2.5},
            r"head.subcenters=2.5 has type float; Head needs int",
        ),
    ],
)
def test_wrong_types_are_refused_naming_the_parameter(name, parameters, message):
    with pytest.raises(TypeError, match=message):
        create_head(name, 8, 4, **parameters)


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("arcface", {"margin.margin": "abc"}, r"head.margin.margin=abc has type str; ArcFace needs float"),
        ("subcenter_arcface", {"subcenters": 2.5}, r"head.subcenters=2.5 has type float; Head needs int"),
        (
            "center",
            {"terms.center.center_lr": "fast"},
            r"head.terms.center.center_lr=fast has type str; CenterLoss needs float or null",
        ),
        (
            "arcface_center",
            {"terms.center.update": 1},
            r"head.terms.center.update=1 has type int; CenterLoss needs str",
        ),
    ],
)
def test_wrong_types_in_a_config_are_refused_naming_the_key(name, values, message):
    with pytest.raises(TypeError, match=message):
        build_head(head_config(name, **values), 8, 4)


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("arcface", {"margin": -5.0}, r"head.margin.margin=-5.0 is outside \[0, 1.5708\)"),
        ("arcface", {"margin": math.nan}, r"head.margin.margin=nan is outside"),
        ("cosface", {"margin": 1.0}, r"head.margin.margin=1.0 is outside \[0, 1\)"),
        ("cosface", {"scale": 0.0}, r"head.margin.scale=0.0 is outside \(0, inf\)"),
        ("combined", {"m1": 0.0}, r"head.margin.m1=0.0 is outside \(0, inf\)"),
        ("combined", {"m2": 4.0}, r"head.margin.m2=4.0 is outside \[0, 3.14159\)"),
        ("adaface", {"h": 2.0}, r"head.margin.h=2.0 is outside \[0, 1\]"),
        ("adaface", {"momentum": 0.0}, r"head.margin.momentum=0.0 is outside \(0, 1\]"),
        ("arcface", {"subcenters": 0}, r"head.subcenters=0 is outside \[1, inf\)"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_interval(name, parameters, message):
    with pytest.raises(ValueError, match=message):
        create_head(name, 8, 4, **parameters)


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("subcenter_arcface", {"subcenters": 0}, r"head.subcenters=0 is outside \[1, inf\)"),
        ("center", {"terms.center.weight": -1.0}, r"head.terms.center.weight=-1.0 is outside \[0, inf\)"),
        ("arcface_center", {"terms.center.alpha": 1.5}, r"head.terms.center.alpha=1.5 is outside \(0, 1\]"),
    ],
)
def test_out_of_range_values_in_a_config_are_refused_naming_the_interval(name, values, message):
    with pytest.raises(ValueError, match=message):
        build_head(head_config(name, **values), 8, 4)


def test_a_parameter_the_head_does_not_take_lists_those_it_takes():
    with pytest.raises(
        ValueError, match=r"head.margin \(Softmax\) takes no parameter margin, scale; its parameters: bias$"
    ):
        create_head("softmax", 8, 4, scale=32.0, margin=0.2)


def test_ints_are_floats_and_bounds_are_inclusive_where_stated():
    assert create_head("cosface", 8, 4, scale=32, margin=0).margin.scale == 32
    check_range("alpha", 1.0, 0.0, 1.0, low_open=True)
    with pytest.raises(ValueError, match=r"head.x=0.0 is outside \(0, 1\]"):
        check_range("x", 0.0, 0.0, 1.0, low_open=True)


@pytest.mark.slow
def test_a_bad_head_parameter_stops_train_py_before_training_with_a_short_message(tmp_path):
    result = run_entry_point(
        "train.py", "experiment=smoke", "head.margin.margin=abc", f"hydra.run.dir={tmp_path}", check=False
    )
    assert result.returncode != 0
    assert "head.margin.margin=abc has type str; ArcFace needs float" in result.stderr, result.stderr[-3000:]
    assert len(result.stderr.splitlines()) < 20, result.stderr
    assert not list(tmp_path.glob("**/*.ckpt"))
