"""Margin registry and Hydra configs: unknown names, ``register_margin``, every ``conf/margin`` and
``conf/head`` YAML builds a working head, and the head configs of old checkpoints build an equal head."""

from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from facerec.heads import (
    ArcFace,
    CenterLoss,
    CosFace,
    Head,
    HeadOutput,
    Margin,
    PartialFC,
    build_head,
    create_head,
    list_margins,
    margin_class,
    register_margin,
    registered_margins,
    registry,
)
from facerec.heads.legacy import OLD_HEADS, is_legacy, upgrade_config, upgrade_state
from tests.heads import reference
from tests.helpers import compose_config

CONF = Path(__file__).resolve().parents[2] / "conf"
MARGINS = ["adaface", "arcface", "combined", "cosface", "softmax"]
"""The margins ported from the one-class-per-head design (others may be registered besides)."""
HEADS = ["adaface", "arcface", "arcface_center", "center", "combined", "cosface", "softmax", "subcenter_arcface"]
"""The ``conf/head`` configs of the old heads, same names."""


def test_list_margins() -> None:
    assert list_margins() == sorted(list_margins())
    assert set(MARGINS) <= set(list_margins())
    assert registered_margins() == [margin_class(name) for name in list_margins()]


def test_unknown_name_lists_valid_margins() -> None:
    with pytest.raises(ValueError, match="unknown margin 'nope'") as error:
        create_head("nope", 8, 5)
    assert all(name in str(error.value) for name in list_margins())


def test_every_margin_has_a_yaml_targeting_its_class() -> None:
    assert sorted(p.stem for p in (CONF / "margin").glob("*.yaml")) == list_margins(facerec_only=True)
    for name in list_margins(facerec_only=True):
        target = OmegaConf.load(CONF / "margin" / f"{name}.yaml")["_target_"]
        assert hydra.utils.get_class(target) is margin_class(name), name


def test_register_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_MARGINS", dict(registry._MARGINS))  # leave the real registry as it was

    @register_margin("test_plain_cosine")
    class PlainCosine(Margin):
        def forward(self, inputs):
            return 10.0 * inputs.cos

    assert margin_class("test_plain_cosine") is PlainCosine and "test_plain_cosine" in list_margins()
    assert register_margin("test_plain_cosine")(PlainCosine) is PlainCosine, "registering again is harmless"
    out = create_head("test_plain_cosine", 8, 5)(torch.randn(4, 8), torch.arange(4))
    assert out.logits.shape == (4, 5) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="margin 'arcface' is already registered by ArcFace"):
        register_margin("arcface")(PlainCosine)
    with pytest.raises(TypeError, match="must subclass facerec.heads.Margin"):
        register_margin("not_a_margin")(torch.nn.Linear)


def test_every_old_head_has_a_yaml() -> None:
    assert set(HEADS) <= {p.stem for p in (CONF / "head").glob("*.yaml")}


@pytest.mark.parametrize("path", sorted((CONF / "head").glob("*.yaml")), ids=lambda p: p.stem)
def test_head_yaml_composes_a_registered_margin_and_builds(path: Path) -> None:
    cfg = OmegaConf.to_container(compose_config(f"head={path.stem}").head, resolve=True)
    assert cfg["_target_"] == "facerec.heads.Head"
    margin = hydra.utils.get_class(cfg["margin"]["_target_"])
    assert margin in registered_margins()
    head = build_head(cfg, embedding_size=8, num_classes=5)
    assert type(head) is Head and type(head.margin) is margin
    out = head(torch.randn(4, 8, requires_grad=True), torch.tensor([0, 1, 2, 4]))
    assert isinstance(out, HeadOutput)
    assert out.loss.shape == () and out.logits.shape == (4, 5)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_a_target_that_is_not_a_head_is_refused() -> None:
    with pytest.raises(ValueError, match="head._target_=torch.nn.Linear is not facerec.heads.Head"):
        build_head({"_target_": "torch.nn.Linear"}, embedding_size=8, num_classes=5)


def test_build_head_errors_name_the_key() -> None:
    config = {"_target_": "facerec.heads.Head", "margin": {"_target_": "facerec.heads.Nope"}}
    with pytest.raises(ValueError, match="head.margin._target_=facerec.heads.Nope cannot be imported"):
        build_head(config, embedding_size=8, num_classes=5)
    config = {"_target_": "facerec.heads.Head", "margin": {"_target_": "facerec.heads.CosFace", "m": 0.1}}
    with pytest.raises(
        ValueError, match=r"head.margin \(CosFace\) takes no parameter m; its parameters: scale, margin"
    ):
        build_head(config, embedding_size=8, num_classes=5)


def test_create_head_errors() -> None:
    with pytest.raises(ValueError, match="valid classifiers: full, partial_fc"):
        create_head("arcface", 8, 5, classifier={"name": "sampled"})
    with pytest.raises(ValueError, match=r"head.margin \(ArcFace\) takes no parameter m"):
        create_head("arcface", 8, 5, m=0.1)


# Old checkpoints: hyper_parameters.head as written by the one-class-per-head facerec, and its state dict.
E, C = 6, 5
OLD_CONFIGS = {
    "softmax": {"bias": True},
    "center": {"bias": True, "center_weight": 0.1, "alpha": 0.5, "update": "paper"},
    "cosface": {"scale": 30.0, "margin": 0.2},
    "arcface": {"scale": 30.0, "margin": 0.5, "easy_margin": False},
    "arcface_center": {"scale": 30.0, "margin": 0.5, "center_weight": 0.2, "center_on": "normalized"},
    "subcenter_arcface": {"scale": 30.0, "margin": 0.5, "subcenters": 2},
    "combined": {"scale": 30.0, "m1": 1.0, "m2": 0.3, "m3": 0.2},
    "adaface": {"scale": 30.0, "margin": 0.4, "h": 0.333, "momentum": 0.3, "eps": 1e-3},
}


def old_state(name: str) -> dict[str, torch.Tensor]:
    """An old head's weights under the old keys (``head.`` prefix), float64."""
    generator = torch.Generator().manual_seed(0)
    rows = C * OLD_CONFIGS[name].get("subcenters", 1)
    state = {"head.classifier.weight": torch.randn(rows, E, generator=generator, dtype=torch.float64)}
    if name in ("softmax", "center"):
        state["head.classifier.bias"] = torch.randn(C, generator=generator, dtype=torch.float64)
    if name in ("center", "arcface_center"):
        state["head.center_loss.centers"] = torch.randn(C, E, generator=generator, dtype=torch.float64)
    if name == "adaface":
        state |= {"head.batch_mean": torch.tensor(4.0, dtype=torch.float64), "head.batch_std": torch.tensor(1.5)}
    return state


def old_reference(name: str, state: dict[str, torch.Tensor], x: torch.Tensor, labels: torch.Tensor):
    """The slow reference of the old head ``name`` on its old weights ``state``: (loss, logits)."""
    p = OLD_CONFIGS[name]
    w = state["head.classifier.weight"]
    if name == "softmax":
        return reference.ref_softmax(x, labels, w, state["head.classifier.bias"])
    if name == "center":
        centers = state["head.center_loss.centers"]
        return reference.ref_center(x, labels, w, state["head.classifier.bias"], centers, p["center_weight"])
    if name == "cosface":
        return reference.ref_cosface(x, labels, w, p["scale"], p["margin"])
    if name == "arcface":
        return reference.ref_arcface(x, labels, w, p["scale"], p["margin"])
    if name == "arcface_center":
        centers = state["head.center_loss.centers"]
        return reference.ref_arcface_center(x, labels, w, p["scale"], p["margin"], centers, 0.2, "normalized")
    if name == "subcenter_arcface":
        return reference.ref_subcenter_arcface(x, labels, w, p["scale"], p["margin"], p["subcenters"])
    if name == "combined":
        return reference.ref_combined(x, labels, w, p["scale"], p["m1"], p["m2"], p["m3"])
    mean0, std0 = state["head.batch_mean"].item(), state["head.batch_std"].item()
    return reference.ref_adaface(x, labels, w, p["scale"], p["margin"], p["h"], p["momentum"], p["eps"], mean0, std0)


def test_every_old_head_is_covered() -> None:
    assert sorted(OLD_CONFIGS) == sorted(OLD_HEADS) == HEADS


@pytest.mark.parametrize("form", ["class", "module", "factory"])
@pytest.mark.parametrize("name", HEADS)
def test_an_old_checkpoint_builds_an_equal_head(name: str, form: str) -> None:
    """Old config → :func:`upgrade_config`, old weights → :func:`upgrade_state`: the old head's loss and logits."""
    old_class = OLD_HEADS[name][0]
    target = {
        "class": f"facerec.heads.{old_class}",
        "module": f"facerec.heads.{name}.{old_class}",
        "factory": "facerec.heads.create_head",
    }[form]
    config = {"_target_": target, **({"name": name} if form == "factory" else {}), **OLD_CONFIGS[name]}
    assert is_legacy(config)
    assert build_head(upgrade_config(config), E, C).state_dict().keys() == build_head(config, E, C).state_dict().keys()
    head = build_head(config, E, C).double()
    state = old_state(name)
    upgraded = dict(state)
    upgrade_state(config, upgraded)
    head.load_state_dict({key.removeprefix("head."): value for key, value in upgraded.items()}, strict=True)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    x = reference.spread_batch(state["head.classifier.weight"][:: OLD_CONFIGS[name].get("subcenters", 1)], labels)
    want_loss, want_logits = old_reference(name, state, x, labels)
    out = head(x, labels)
    torch.testing.assert_close(out.loss, want_loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.logits, want_logits, rtol=1e-9, atol=1e-9)


def test_configs_of_earlier_checkpoints_keep_their_classifier() -> None:
    legacy = {"_target_": "facerec.heads.create_head", "name": "cosface", "margin": 0.3}
    legacy["partial_fc"] = {"enabled": True, "sample_rate": 1.0}
    head = build_head(legacy, embedding_size=8, num_classes=5)
    assert isinstance(head.classifier, PartialFC) and isinstance(head.margin, CosFace) and head.margin.margin == 0.3
    legacy["partial_fc"] = {"enabled": False, "sample_rate": 1.0}  # what every other margin-head checkpoint holds
    head = build_head(legacy, embedding_size=8, num_classes=5)
    assert not isinstance(head.classifier, PartialFC) and head.margin.margin == 0.3
    newer = {"_target_": "facerec.heads.ArcFaceHead", "classifier": {"name": "partial_fc", "sample_rate": 0.25}}
    head = build_head(newer, embedding_size=8, num_classes=5)
    assert isinstance(head.classifier, PartialFC) and head.classifier.sample_rate == 0.25
    assert isinstance(head.margin, ArcFace)


def test_an_old_center_head_keeps_its_center_term() -> None:
    old = {"_target_": "facerec.heads.ArcFaceCenterHead", "center_weight": 0.2, "update": "sgd", "center_lr": 0.3}
    term = build_head(old, 8, 5).terms["center"]
    assert isinstance(term, CenterLoss)
    assert (term.weight, term.update, term.center_lr, term.center_on) == (0.2, "sgd", 0.3, "normalized")
    assert build_head({"_target_": "facerec.heads.CenterHead"}, 8, 5).terms["center"].center_on == "raw"


def test_an_old_config_with_an_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match=r"old head cosface config holds unknown parameters \['m1'\]"):
        upgrade_config({"_target_": "facerec.heads.CosFaceHead", "m1": 1.0})
    with pytest.raises(ValueError, match="is not an old facerec head"):
        upgrade_config({"_target_": "facerec.heads.Head"})
