"""The suite installs offline backbones only for the models that use one."""

from __future__ import annotations

import pytest

from benchmarks.suite.cli import _install_backbones
from benchmarks.suite.config import ModelSpec


def _config(*models: ModelSpec) -> dict:
    return {"backbones": ["efficientnet-lite0"], "models": list(models), "run_models": None}


def test_simsid_alone_needs_no_backbone_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    _install_backbones(_config(ModelSpec(name="SimSID", class_path="anomalib_simsid.SimSID")))


def test_a_backbone_model_asks_for_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    padim = ModelSpec(name="PaDiM", class_path="anomalib.models.Padim", init_args={"backbone": "resnet18"})
    simsid = ModelSpec(name="SimSID", class_path="anomalib_simsid.SimSID")
    with pytest.raises(ValueError, match="HF_HUB_CACHE"):
        _install_backbones(_config(simsid, padim))
    _install_backbones(_config(simsid, padim) | {"run_models": ["SimSID"]})  # PaDiM not run: nothing asked
