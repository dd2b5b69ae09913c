"""Where pretrained weights are looked for: huggingface_hub's own cache location."""

from __future__ import annotations

import importlib

import pytest
from huggingface_hub import constants

from facerec.models.pretrained import cached_weights

HUB_VARIABLES = ("HF_HUB_CACHE", "HF_HOME", "HUGGINGFACE_HUB_CACHE")


@pytest.fixture
def hub_environment(monkeypatch, tmp_path):
    """Sets hub variables and re-reads ``huggingface_hub.constants`` (it reads them once, at import)."""

    def set_variables(**variables: str) -> None:
        for name in HUB_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        importlib.reload(constants)

    yield set_variables
    monkeypatch.undo()
    importlib.reload(constants)


@pytest.mark.parametrize(
    ("variables", "hub"),
    [({"HF_HUB_CACHE": "hub_cache", "HF_HOME": "hf_home"}, "hub_cache"), ({"HF_HOME": "hf_home"}, "hf_home/hub")],
)
def test_the_hub_cache_follows_huggingface_hubs_variables(hub_environment, tmp_path, variables, hub):
    """``$HF_HUB_CACHE``, else ``$HF_HOME/hub``: the folder huggingface_hub itself uses."""
    hub_environment(**{name: str(tmp_path / folder) for name, folder in variables.items()})
    with pytest.raises(RuntimeError, match="not in the local cache") as error:
        cached_weights("test_resnet")
    assert f"in {tmp_path / hub} (set HF_HUB_CACHE or HF_HOME)" in str(error.value)
