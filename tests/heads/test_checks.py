"""Head parameters are checked when the head is built: names, types and ranges, with messages naming them."""

from __future__ import annotations

import math

import pytest

from facerec.heads import create_head
from facerec.heads.checks import check_range
from tests.helpers import run_entry_point


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("arcface", {"margin": "abc"}, r"head.margin=abc has type str; head arcface needs float"),
        ("cosface", {"scale": True}, r"head.scale=True has type bool; head cosface needs float"),
        (
            "subcenter_arcface",
            {"subcenters": 2.5},
            r"head.subcenters=2.5 has type float; head subcenter_arcface needs int",
        ),
        ("center", {"center_lr": "fast"}, r"head.center_lr=fast has type str; head center needs float or null"),
        ("arcface_center", {"update": 1}, r"head.update=1 has type int; head arcface_center needs str"),
    ],
)
def test_wrong_types_are_refused_naming_the_parameter(name, parameters, message):
    with pytest.raises(TypeError, match=message):
        create_head(name, 8, 4, **parameters)


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("arcface", {"margin": -5.0}, r"head.margin=-5.0 is outside \[0, 1.5708\)"),
        ("arcface", {"margin": math.nan}, r"head.margin=nan is outside"),
        ("cosface", {"margin": 1.0}, r"head.margin=1.0 is outside \[0, 1\)"),
        ("cosface", {"scale": 0.0}, r"head.scale=0.0 is outside \(0, inf\)"),
        ("combined", {"m1": 0.0}, r"head.m1=0.0 is outside \(0, inf\)"),
        ("combined", {"m2": 4.0}, r"head.m2=4.0 is outside \[0, 3.14159\)"),
        ("adaface", {"h": 2.0}, r"head.h=2.0 is outside \[0, 1\]"),
        ("adaface", {"momentum": 0.0}, r"head.momentum=0.0 is outside \(0, 1\]"),
        ("subcenter_arcface", {"subcenters": 0}, r"head.subcenters=0 is outside \[1, inf\)"),
        ("center", {"center_weight": -1.0}, r"head.center_weight=-1.0 is outside \[0, inf\)"),
        ("arcface_center", {"alpha": 1.5}, r"head.alpha=1.5 is outside \(0, 1\]"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_interval(name, parameters, message):
    with pytest.raises(ValueError, match=message):
        create_head(name, 8, 4, **parameters)


def test_a_parameter_the_head_does_not_take_lists_those_it_takes():
    with pytest.raises(ValueError, match=r"head softmax takes no parameter margin, scale; its parameters: bias$"):
        create_head("softmax", 8, 4, scale=32.0, margin=0.2)


def test_ints_are_floats_and_bounds_are_inclusive_where_stated():
    assert create_head("cosface", 8, 4, scale=32, margin=0).scale == 32
    check_range("alpha", 1.0, 0.0, 1.0, low_open=True)
    with pytest.raises(ValueError, match=r"head.x=0.0 is outside \(0, 1\]"):
        check_range("x", 0.0, 0.0, 1.0, low_open=True)


@pytest.mark.slow
def test_a_bad_head_parameter_stops_train_py_before_training_with_a_short_message(tmp_path):
    result = run_entry_point(
        "train.py", "experiment=smoke", "head.margin=abc", f"hydra.run.dir={tmp_path}", check=False
    )
    assert result.returncode != 0
    assert "head.margin=abc has type str; head arcface needs float" in result.stderr, result.stderr[-3000:]
    assert len(result.stderr.splitlines()) < 20, result.stderr
    assert not list(tmp_path.glob("**/*.ckpt"))
