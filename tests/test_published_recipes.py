"""Published large-scale recipes (``conf/experiment/``): their facts, LR scaling, and 2 real training steps each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from facerec.data.decode import encode_jpeg
from facerec.data.tools import folder_to_rec
from facerec.data.verification.bin import write_verification_bin
from facerec.heads import margin_class
from facerec.run.resolvers import device_count, global_batch, lr_for_batch, steps_for_batch
from facerec.run.training import train
from tests.helpers import REPO, compose_config

VAL_SETS = ("lfw", "cfp_fp", "agedb_30")
FULL = {"_target_": "facerec.heads.FullClassifier", "_partial_": True}
PARTIAL_FC = {"_target_": "facerec.heads.PartialFC", "_partial_": True, "sample_rate": 1.0}


def margin_target(name: str) -> str:
    """``_target_`` of the margin registered as ``name``."""
    return f"facerec.heads.{margin_class(name).__qualname__}"


# The facts each preset must carry, from its source (see the header comment of conf/experiment/<name>.yaml).
RECIPES = {
    "casia_iresnet50": {  # ArcFace paper (Deng et al., CVPR 2019), Sec. 3.1 and Table 2
        "backbone": "iresnet50", "head": "arcface", "margin": 0.5, "classifier": FULL,
        "batch": 128, "devices": 4, "lr": 0.1, "weight_decay": 5e-4, "precision": "32-true", "dropout": 0.4,
        "schedule": {"decay": "step", "milestones": [20000, 28000], "milestone_unit": "step", "gamma": 0.1,
                     "warmup_epochs": 0},
        "length": {"max_epochs": -1, "max_steps": 32000},
    },
    "ms1mv3_iresnet50": {  # insightface recognition/arcface_torch/configs/ms1mv3_r50.py
        "backbone": "iresnet50", "head": "arcface", "margin": 0.5,
        "classifier": PARTIAL_FC,
        "batch": 128, "devices": 8, "lr": 0.2, "weight_decay": 5e-4, "precision": "16-mixed", "dropout": 0.0,
        "schedule": {"decay": "poly", "power": 2.0, "warmup_epochs": 2, "min_lr_ratio": 0.0},
        "length": {"max_epochs": 25},
    },
    "ms1mv3_iresnet100": {  # insightface recognition/arcface_torch/configs/ms1mv3_r100.py
        "backbone": "iresnet100", "head": "arcface", "margin": 0.5,
        "classifier": PARTIAL_FC,
        "batch": 128, "devices": 8, "lr": 0.2, "weight_decay": 5e-4, "precision": "16-mixed", "dropout": 0.0,
        "schedule": {"decay": "poly", "power": 2.0, "warmup_epochs": 0, "min_lr_ratio": 0.0},
        "length": {"max_epochs": 25},
    },
    "glint360k_iresnet100": {  # insightface recognition/arcface_torch/configs/glint360k_r100.py
        "backbone": "iresnet100", "head": "cosface", "margin": 0.4,
        "classifier": PARTIAL_FC,
        "batch": 128, "devices": 8, "lr": 0.1, "weight_decay": 1e-4, "precision": "16-mixed", "dropout": 0.0,
        "schedule": {"decay": "poly", "power": 2.0, "warmup_epochs": 0, "min_lr_ratio": 0.0},
        "length": {"max_epochs": 20},
    },
}  # fmt: skip
PRESETS = sorted(RECIPES)
EXPERIMENTS = REPO / "conf" / "experiment"


def compose_preset(name: str, *overrides: str):
    return compose_config(f"experiment={name}", "data.root=/data/set", *overrides)


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


@pytest.fixture(scope="module")
def presets() -> dict:
    """Every preset composed once, as ``python train.py experiment=<name> data.root=/data/set`` would."""
    return {name: compose_preset(name) for name in PRESETS}


@pytest.mark.parametrize("name", PRESETS)
def test_preset_carries_the_published_recipe(name, presets):
    facts, cfg = RECIPES[name], presets[name]
    global_batch_size = facts["batch"] * facts["devices"]
    assert (cfg.data.batch_size, cfg.trainer.devices, cfg.trainer.num_nodes) == (facts["batch"], facts["devices"], 1)
    assert cfg.recipe.reference_batch == cfg.recipe.global_batch == global_batch_size
    assert cfg.recipe.reference_lr == cfg.optimizer.lr == pytest.approx(facts["lr"])
    assert (cfg.data.format, cfg.data.root, list(cfg.data.image_size)) == ("rec", "/data/set", [112, 112])
    assert plain(cfg.data.val_sets) == {name: {"bin": f"/data/set/{name}.bin"} for name in VAL_SETS}
    assert cfg.monitor == "val/lfw/accuracy"
    assert cfg.backbone.name == facts["backbone"]
    assert (cfg.neck._target_, cfg.neck.dropout) == ("facerec.models.LinearNeck", facts["dropout"])
    assert cfg.model.embedding_size == 512
    head = plain(cfg.head)
    margin = head["margin"]
    assert (margin["_target_"], margin["scale"], margin["margin"]) == (
        margin_target(facts["head"]),
        64.0,
        facts["margin"],
    )
    assert head["classifier"] == facts["classifier"]
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.9, pytest.approx(facts["weight_decay"]))
    assert plain(cfg.scheduler).items() >= facts["schedule"].items()
    assert cfg.scheduler._target_ == "facerec.module.WarmupDecay"
    trainer = {key: cfg.trainer.get(key) for key in (*facts["length"], "precision")}
    assert trainer == {**facts["length"], "precision": facts["precision"]}
    assert cfg.trainer.strategy._target_ == "facerec.module.ShardedCentresDDPStrategy"  # DDP, centres sharded
    assert (cfg.trainer.accelerator, cfg.trainer.sync_batchnorm) == ("gpu", False)


def own_settings(path: Path) -> tuple[list[Path], dict[str, str], dict]:
    """A config file's bases (the configs its defaults list names), its group overrides, and its own keys."""
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    bases, overrides = [], {}
    for entry in content.pop("defaults", []):
        if isinstance(entry, str):
            if entry != "_self_":
                bases.append(
                    REPO / "conf" / f"{entry[1:]}.yaml" if entry.startswith("/") else path.parent / f"{entry}.yaml"
                )
        else:
            ((key, option),) = entry.items()
            overrides[key.removeprefix("override").strip().lstrip("/")] = option
    return bases, overrides, content


def leaves(node: dict, prefix: str = "") -> dict:
    """``{"a.b": value}`` for every value in a nested dict that is not itself a non-empty dict."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def inherited(path: Path) -> tuple[dict, dict, list[str]]:
    """What the bases of ``path`` set (group overrides, flattened keys; the nearer base wins), and their names."""
    overrides, settings, names = {}, {}, []
    for base in own_settings(path)[0]:
        assert base.is_file(), f"{path} lists {base}, which does not exist"
        base_overrides, base_settings, base_names = inherited(base)
        _, own_overrides, own = own_settings(base)
        overrides |= base_overrides | own_overrides
        settings |= base_settings | leaves(own)
        names += [*base_names, base.relative_to(EXPERIMENTS).with_suffix("").as_posix()]
    return overrides, settings, names


DERIVED = sorted(path for path in EXPERIMENTS.rglob("*.yaml") if own_settings(path)[0])  # files that list a base


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_on_the_shared_base(name):
    # A recipe copied out in full again (no base) fails here; one that keeps its base and repeats it, below.
    names = inherited(EXPERIMENTS / f"{name}.yaml")[2]
    assert "_base/published" in names
    assert ("_base/arcface_torch" in names) == (name != "casia_iresnet50")  # insightface's arcface_torch configs


@pytest.mark.parametrize("path", DERIVED, ids=[path.relative_to(EXPERIMENTS).as_posix() for path in DERIVED])
def test_a_recipe_holds_only_what_differs_from_its_base(path):
    base_overrides, base_settings, _ = inherited(path)
    _, overrides, own = own_settings(path)
    repeated = [
        f"override /{group}: {option}" for group, option in overrides.items() if base_overrides.get(group) == option
    ]
    repeated += [
        f"{key}: {value}" for key, value in leaves(own).items() if key in base_settings and base_settings[key] == value
    ]
    assert not repeated, f"{path.relative_to(REPO)} repeats its base's values; drop them: {repeated}"


def check_scaling(name: str, cfg, global_batch_size: int) -> None:
    """LR linear in the global batch; epochs kept, or (a schedule in iterations) steps scaled inversely."""
    facts = RECIPES[name]
    ratio = global_batch_size / (facts["batch"] * facts["devices"])
    assert cfg.recipe.global_batch == global_batch_size
    assert cfg.optimizer.lr == pytest.approx(facts["lr"] * ratio)
    if facts["schedule"]["decay"] == "step":
        assert cfg.trainer.max_steps == round(facts["length"]["max_steps"] / ratio)
        assert list(cfg.scheduler.milestones) == [round(m / ratio) for m in facts["schedule"]["milestones"]]
    else:
        assert cfg.trainer.max_epochs == facts["length"]["max_epochs"]


@pytest.mark.parametrize("name", PRESETS)
def test_lr_scales_linearly_with_the_global_batch(name):
    cfg = compose_preset(name, "trainer.devices=1")  # one GPU: 1/4 (CASIA) or 1/8 of the reference batch
    check_scaling(name, cfg, 128)
    # The interpolations follow every factor of the global batch (edited in place, as further overrides would).
    for changes, global_batch_size in [
        ({"trainer.devices": 2, "trainer.num_nodes": 2}, 512),
        ({"trainer.devices": [0, 1], "trainer.num_nodes": 1, "trainer.accumulate_grad_batches": 2}, 512),
        ({"trainer.devices": "1", "trainer.accumulate_grad_batches": 1, "data.batch_size": 64}, 64),
        ({"trainer.devices": 8, "trainer.num_nodes": 2, "data.batch_size": 128}, 2048),
    ]:
        for key, value in changes.items():
            OmegaConf.update(cfg, key, value)
        check_scaling(name, cfg, global_batch_size)


def test_casia_on_one_gpu_quarters_the_lr_and_quadruples_the_iterations():
    cfg = compose_preset("casia_iresnet50", "trainer.devices=1")
    assert cfg.optimizer.lr == pytest.approx(0.025)
    assert (cfg.trainer.max_steps, list(cfg.scheduler.milestones)) == (128_000, [80_000, 112_000])


def test_an_explicit_lr_is_not_scaled():
    cfg = compose_preset("ms1mv3_iresnet50", "trainer.devices=1", "optimizer.lr=0.05")
    assert cfg.optimizer.lr == 0.05


def test_devices_auto_names_the_fix():
    cfg = compose_preset("ms1mv3_iresnet50", "trainer.devices=auto")
    with pytest.raises(InterpolationResolutionError, match="set trainer.devices to a number"):
        _ = cfg.optimizer.lr


@pytest.mark.parametrize(("devices", "count"), [(4, 4), ("4", 4), ([0, 1, 2], 3), ("0,1", 2), ("1,", 1)])
def test_device_count(devices, count):
    assert device_count(devices) == count


@pytest.mark.parametrize("devices", ["auto", -1, "-1", 0, [], True])
def test_device_count_rejects_machine_dependent_values(devices):
    with pytest.raises(ValueError, match="cannot compute the global batch"):
        device_count(devices)


def test_scaling_resolvers():
    assert global_batch(128, 8, 2, 4) == 8192
    assert lr_for_batch(0.1, 512, 128) == pytest.approx(0.025)
    assert steps_for_batch(20000, 512, 2048) == 5000
    assert steps_for_batch(32000, 512, 384) == 42667
    with pytest.raises(ValueError, match="data.batch_size must be a positive integer"):
        global_batch(0, 1)


def image(rng: np.random.Generator, base: int) -> np.ndarray:
    return np.clip(base + rng.integers(-20, 20, (32, 32, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny insightface folder: train.rec/.idx (2 identities × 2 images) and lfw/cfp_fp/agedb_30.bin (2 pairs)."""
    root, faces = tmp_path_factory.mktemp("insightface"), tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for identity in range(2):
        (faces / f"id{identity}").mkdir()
        for number in range(2):
            (faces / f"id{identity}" / f"{number}.jpg").write_bytes(encode_jpeg(image(rng, 60 + 100 * identity)))
    assert folder_to_rec(faces, root) == (4, 2)
    for val_set in VAL_SETS:
        jpegs = [encode_jpeg(image(rng, 60 + 100 * (k in (0, 1, 2)))) for k in range(4)]
        write_verification_bin(root / f"{val_set}.bin", jpegs, [True, False])
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_two_training_steps_on_tiny_data(name, tiny_root, tmp_path):
    # 4 images at batch 2 (drop_last): 2 steps are exactly one epoch, then one verification of the 3 sets.
    # Kept cheap for 2 CPU cores: 2 folds of 2 pairs, no flip TTA, no best-by-monitor checkpoint, a weights-only
    # last.ckpt (an IR-100 checkpoint with SGD momentum is ~0.5 GB).
    cfg = compose_config(
        f"experiment={name}", f"data.root={tiny_root}",
        "data.image_size=[32,32]", "data.batch_size=2", "data.num_workers=0", "callbacks.verification.n_folds=2",
        "model.flip_test=false", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto",
        "trainer.precision=32-true", "++trainer.max_steps=2", "trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false", "logger=csv", "callbacks.verification.roc_plots=false",
        "callbacks.model_checkpoint=null", "+callbacks.last_checkpoint.save_weights_only=true",
        output_dir=tmp_path / "run", data_dir=tmp_path / "data",
    )  # fmt: skip
    monitored = train(cfg)
    assert monitored is not None and 0.0 <= monitored <= 1.0  # train() returns monitor=val/lfw/accuracy
    facts, run = RECIPES[name], tmp_path / "run"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
    assert checkpoint["global_step"] == 2
    hparams = checkpoint["hyper_parameters"]
    assert hparams["optimizer"]["lr"] == pytest.approx(facts["lr"] * 2 / (facts["batch"] * facts["devices"]))
    assert (
        hparams["head"]["margin"]["_target_"] == margin_target(facts["head"])
        and hparams["scheduler"]["decay"] == facts["schedule"]["decay"]
    )
    assert hparams["backbone"]["name"] == facts["backbone"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert sorted(metrics) == sorted(VAL_SETS)
    assert all(0.0 <= metrics[val_set]["accuracy"] <= 1.0 for val_set in VAL_SETS)
