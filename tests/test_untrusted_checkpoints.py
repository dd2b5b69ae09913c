"""A checkpoint is data: hyper-parameters that would build anything but facerec's own parts are refused, unbuilt.

Each crafted checkpoint would write a file under ``markers/`` if any of it ran (the ``torch.load`` payload
when unpickled); every entry point must refuse it, naming the key, and leave ``markers/`` empty.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import facerec
from facerec.embed import main as embed_main
from facerec.errors import CheckpointError
from facerec.module import FaceRecognitionModule
from facerec.module.allowlist import allowed_parts, check_hyperparameters
from facerec.module.schedule import LEGACY_SCHEDULE, WarmupDecay
from facerec.run.training import train
from tests.helpers import REPO, compose_config, evaluate_in_process, run_process, write_image

HP = "hyper_parameters"


class WritesMarker:
    """Unpickled, opens ``path`` for writing: what a payload that runs code would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return open, (str(self.path), "w")


def backbone(**options) -> dict:
    return {"_target_": "facerec.models.create_backbone", "name": "test_resnet", **options}


def pool_fc(**options) -> dict:
    return {"_target_": "facerec.models.PoolFCNeck", **options}


def variants(markers: Path, payload: Path) -> dict[str, tuple[str, str, object, str]]:
    """Name → (checkpoint entry, part, crafted part, refused key below it): each would write under ``markers``.

    A part put in Lightning 0.7's ``hparams`` entry is removed from ``hyper_parameters``, so that it is the one
    Lightning would build.
    """
    touch = {"_target_": "pathlib.Path.touch", "_args_": [str(markers / "touch")]}
    run = {"_target_": "subprocess.run", "args": ["touch", str(markers / "run")]}
    system = {"_target_": "os.system", "_args_": [f"touch {markers / 'system'}"]}
    save = {"_target_": "numpy.save", "file": str(markers / "save.npy"), "arr": [1]}
    opened = {"_target_": "builtins.open", "file": str(markers / "open"), "mode": "w"}
    loads = {"_target_": "torch.load", "f": str(payload), "weights_only": False}
    head = {"_target_": "facerec.heads.create_head", "name": "arcface", "classifier": run}
    return {
        "torch.load": (HP, "backbone", loads, "_target_"),
        "builtins.open": (HP, "backbone", opened, "_target_"),
        "Path.touch in _args_": (HP, "backbone", backbone(_args_=[touch]), "_args_"),
        "numpy.save in a dict": (HP, "backbone", backbone(pretrained_cfg=save), "pretrained_cfg._target_"),
        "os.system in a list": (HP, "backbone", backbone(channels=[8, system]), "channels[1]._target_"),
        "subprocess.run in the neck": (HP, "neck", pool_fc(dropout=run), "dropout._target_"),
        "subprocess.run in the head": (HP, "head", head, "classifier._target_"),
        "_partial_": (HP, "backbone", backbone(_partial_=True), "_partial_"),
        "an interpolation": (HP, "neck", pool_fc(dropout="${oc.env:HOME}"), "dropout"),
        "Lightning 0.7's hparams": ("hparams", "backbone", opened, "_target_"),
        "weights from another file": (HP, "backbone", backbone(checkpoint_path=str(payload)), "checkpoint_path"),
        "a hub model": (HP, "backbone", backbone(name="hf-hub:someone/model"), "name"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def genuine(data_dir, tmp_path_factory) -> Path:
    """The ``last.ckpt`` of a one-epoch ``experiment=smoke`` run, in-process."""
    run = tmp_path_factory.mktemp("genuine")
    train(compose_config("experiment=smoke", "trainer.max_epochs=1", output_dir=run, data_dir=data_dir))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def crafted(genuine, tmp_path_factory) -> dict[str, tuple[str, Path]]:
    """Variant name → (refused key, crafted checkpoint); what they would write goes to ``<their folder>/markers``."""
    root = tmp_path_factory.mktemp("crafted")
    (root / "markers").mkdir()
    torch.save(WritesMarker(root / "markers" / "payload"), root / "payload.pt")
    checkpoints = {}
    for index, (name, (entry, part, value, key)) in enumerate(variants(root / "markers", root / "payload.pt").items()):
        checkpoint = torch.load(genuine, map_location="cpu", weights_only=True)
        if entry != "hyper_parameters":
            checkpoint["hyper_parameters"].pop(part)
        checkpoint.setdefault(entry, {})[part] = value
        torch.save(checkpoint, root / f"{index}.ckpt")
        checkpoints[name] = (f"{entry}.{part}.{key}", root / f"{index}.ckpt")
    return checkpoints


@pytest.fixture
def images(tmp_path) -> Path:
    write_image(tmp_path / "images" / "a.jpg", size=32)
    return tmp_path / "images"


def load_model(checkpoint: Path, tmp_path: Path, data_dir: Path) -> object:
    return facerec.load_model(checkpoint, device="cpu")


def load_module(checkpoint: Path, tmp_path: Path, data_dir: Path) -> object:
    return FaceRecognitionModule.load_from_checkpoint(checkpoint, map_location="cpu")


def evaluate(checkpoint: Path, tmp_path: Path, data_dir: Path) -> object:
    return evaluate_in_process(
        "data=synthetic_mini", f"ckpt_path={checkpoint}", f"metrics_file={tmp_path / 'eval.json'}",
        output_dir=tmp_path / "eval", data_dir=data_dir,
    )  # fmt: skip


def resume(checkpoint: Path, tmp_path: Path, data_dir: Path) -> object:
    cfg = compose_config(
        "experiment=smoke", f"ckpt_path={checkpoint}", "trainer.max_epochs=2", output_dir=tmp_path / "run",
        data_dir=data_dir,
    )  # fmt: skip
    return train(cfg)


ENTRIES = {
    "load_model": load_model,
    "load_from_checkpoint (viz)": load_module,
    "eval.py": evaluate,
    "train.py ckpt_path=": resume,
}


def test_the_payload_runs_code_when_unpickled(tmp_path):
    """The payload is real: what the checks keep from running would write a file."""
    torch.save(WritesMarker(tmp_path / "marker"), tmp_path / "payload.pt")
    torch.load(tmp_path / "payload.pt", weights_only=False)
    assert (tmp_path / "marker").is_file()


@pytest.mark.parametrize("variant", list(variants(Path("m"), Path("p"))))
@pytest.mark.parametrize("entry", [*ENTRIES, "facerec.embed"])
def test_a_crafted_checkpoint_is_refused_naming_the_key_and_runs_nothing(
    crafted, data_dir, images, tmp_path, capsys, entry, variant
):
    key, checkpoint = crafted[variant]
    if entry == "facerec.embed":
        assert embed_main([str(checkpoint), str(images), "--out", str(tmp_path / "e.npz"), "--workers", "0"]) == 2
        message = capsys.readouterr().err
        assert message.count("\n") == 1 and not (tmp_path / "e.npz").exists()
    else:
        with pytest.raises(CheckpointError) as error:
            ENTRIES[entry](checkpoint, tmp_path, data_dir)
        message = str(error.value)
    assert f"{checkpoint}: {key} = " in message and " is refused: " in message
    assert not any((checkpoint.parent / "markers").iterdir())


@pytest.mark.slow
def test_the_embed_command_refuses_the_reproduction_in_one_line(crafted, images, tmp_path):
    key, checkpoint = crafted["torch.load"]
    command = [sys.executable, "-m", "facerec.embed", str(checkpoint), str(images), "--out", str(tmp_path / "e.npz")]
    process = run_process(command, timeout=120, check=False)
    out, err = process.stdout, process.stderr
    assert process.returncode == 2 and out == ""
    assert err.splitlines() == [err.strip()] and err.startswith(f"error: {checkpoint}: {key} = 'torch.load' is refused")
    assert not any((checkpoint.parent / "markers").iterdir()) and not (tmp_path / "e.npz").exists()


@pytest.mark.parametrize("entry", [*ENTRIES, "facerec.embed"])
def test_a_genuine_checkpoint_still_loads(genuine, data_dir, images, tmp_path, entry):
    if entry == "facerec.embed":
        assert embed_main([str(genuine), str(images), "--out", str(tmp_path / "e.npz"), "--workers", "0"]) == 0
    elif entry == "train.py ckpt_path=":
        ENTRIES[entry](genuine, tmp_path, data_dir)
        assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    else:
        assert ENTRIES[entry](genuine, tmp_path, data_dir)


@pytest.mark.parametrize("group", ["backbone", "neck", "head", "optimizer", "scheduler"])
def test_every_configured_part_is_allowed(group):
    """The allowlist follows the code's registries; every ``conf/<group>`` option must be on it."""
    targets = {OmegaConf.load(path).get("_target_") for path in (REPO / "conf" / group).glob("*.yaml")} - {None}
    assert targets and targets <= allowed_parts()[group].targets


def test_a_legacy_head_config_is_allowed(genuine, tmp_path):
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=True)
    legacy = {"_target_": "facerec.heads.create_head", "name": "arcface", "margin": 0.5}
    checkpoint["hyper_parameters"]["head"] = {**legacy, "partial_fc": {"enabled": False, "sample_rate": 1.0}}
    torch.save(checkpoint, tmp_path / "legacy.ckpt")
    assert facerec.load_model(tmp_path / "legacy.ckpt", device="cpu").flip


def test_a_legacy_scheduler_target_is_allowed_and_builds_today_s_schedule(genuine, tmp_path):
    checkpoint = torch.load(genuine, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["scheduler"]["_target_"] = LEGACY_SCHEDULE
    torch.save(checkpoint, tmp_path / "legacy.ckpt")
    model = FaceRecognitionModule.load_from_checkpoint(tmp_path / "legacy.ckpt", map_location="cpu")
    assert model.hparams.scheduler["_target_"] == "facerec.module.schedule.WarmupDecay"
    assert isinstance(instantiate(model.hparams.scheduler, total_steps=10, steps_per_epoch=2), WarmupDecay)


@pytest.mark.parametrize(
    ("checkpoint", "key"),
    [
        ({"hparams_name": "backbone", HP: {}}, "hparams_name"),
        ({HP: {"_instantiator": "lightning.pytorch.cli.instantiate_module"}}, f"{HP}._instantiator"),
        ({HP: ["backbone"]}, HP),
        ({HP: {"neck": ["${oc.env:HOME}"]}}, f"{HP}.neck[0]"),
        ({HP: {"class_names": [{"_target_": "os.getcwd"}]}}, f"{HP}.class_names[0]._target_"),
        ({HP: {"scheduler": {"_target_": "torch.optim.lr_scheduler.LambdaLR"}}}, f"{HP}.scheduler._target_"),
    ],
)
def test_what_else_lightning_would_build_from_is_refused(checkpoint, key):
    with pytest.raises(CheckpointError, match=rf"^x\.ckpt: {re.escape(key)} = .* is refused: "):
        check_hyperparameters(checkpoint, "x.ckpt")
