"""Every config option composes, and config names match the code."""

from __future__ import annotations

import json

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from facerec.heads import Head, build_head, list_margins, margin_class
from tests.helpers import REPO, compose_config, run_entry_point

GROUPS = ["backbone", "neck", "head", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment"]
HEADS = sorted(path.stem for path in (REPO / "conf" / "head").glob("*.yaml"))
# Not recursive: conf/experiment/_base/ holds the bases the published recipes list in their defaults, not presets.
PRESETS = sorted(path.stem for path in (REPO / "conf" / "experiment").glob("*.yaml"))
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((REPO / "conf" / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose_config(f"{group}={option}")
    assert cfg.model._target_ == "facerec.module.FaceRecognitionModule"


def test_head_configs_compose_a_registered_margin_and_every_margin_has_its_config_and_a_head():
    used = set()
    for head in HEADS:
        cfg = compose_config(f"head={head}").head
        assert cfg._target_ == "facerec.heads.Head", head
        used.add(cfg.margin._target_)
    for name in list_margins(facerec_only=True):
        target = f"facerec.heads.{margin_class(name).__qualname__}"
        assert OmegaConf.load(REPO / "conf" / "margin" / f"{name}.yaml")._target_ == target
        assert target in used, f"no conf/head/*.yaml uses margin {name}"


@pytest.mark.parametrize("group", ["margin", "loss_term", "classifier"])
def test_every_part_config_composes_into_a_head(group):
    for path in sorted((REPO / "conf" / group).glob("*.yaml")):
        cfg = compose_config("head=cosface", f"+{group}@head.parts.{path.stem}={path.stem}")
        assert cfg.head.parts[path.stem]._target_.startswith("facerec.heads."), path


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException, match="Available options") as error:
        compose_config("head=arcfase")
    assert "arcface" in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_with_every_head_and_builds_it(preset):
    for head in HEADS:
        cfg = compose_config(f"experiment={preset}", f"head={head}", "data.root=unused")
        built = build_head(OmegaConf.to_container(cfg.head, resolve=True), embedding_size=8, num_classes=4)
        assert isinstance(built, Head) and built.training, (preset, head)


def test_a_preset_sets_each_head_it_names_and_the_command_line_wins():
    margin = compose_config("experiment=small_data", "head=cosface").head.margin
    assert (margin.scale, margin.margin) == (32.0, 0.21)
    overridden = compose_config("experiment=small_data", "head=cosface", "head.margin.margin=0.3")
    assert overridden.head.margin.margin == 0.3
    assert compose_config("experiment=quickstart", "head=cosface").head.margin.margin == 0.35  # not set by the preset
    partial = compose_config("experiment=ms1mv3_iresnet50", "head=combined", "data.root=unused").head.classifier
    assert partial._target_ == "facerec.heads.PartialFC"


def test_every_experiment_head_file_names_a_preset_and_a_head():
    for path in (REPO / "conf" / "experiment_head").glob("*.yaml"):
        matches = [(p, h) for p in PRESETS for h in HEADS if path.stem == f"{p}_{h}"]
        assert matches, f"{path.name} is <experiment>_<head> for no experiment and head: it would never be used"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sweep_over_every_head_under_one_preset_trains_each(data_dir, tmp_path):
    run_entry_point(
        "train.py", "-m", "experiment=quickstart", f"head={','.join(HEADS)}",
        f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}", "data=synthetic_mini", "backbone=test_resnet",
        "logger=csv", "data.batch_size=8", "data.image_size=[32,32]", "+trainer.max_steps=1", "~callbacks.features",
        "callbacks.verification.roc_plots=false", timeout=900,
    )  # fmt: skip  # 20 jobs: at the data's own 32x32 and without a ROC picture per job (neither is what is checked)
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = json.loads((sweep / "multirun_summary.json").read_text())["jobs"]
    assert [job["overrides"].split()[1] for job in jobs] == [f"head={head}" for head in HEADS]
    assert all((sweep / str(job["job"]) / "checkpoints" / "last.ckpt").is_file() for job in jobs)
