"""`anomalib benchmark` of PaDiM, PatchCore and SimSID: every model's row in results.csv, exit codes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from anomalib_simsid.fixes.benchmark import holds_simsid
from tests.helpers import TINY_MODEL

SIZE = TINY_MODEL["img_size"]
COUNTS = {("train", "normal"): 8, ("val", "normal"): 2, ("val", "abnormal"): 2}
COUNTS |= {("test", "normal"): 30, ("test", "abnormal"): 30}  # >= 20 sharpness-matched pairs
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Random backbones: no download, and seconds per job.
MODELS = [
    {
        "class_path": "Padim",
        "init_args": {"backbone": "resnet18", "pre_trained": False, "layers": ["layer1"], "n_features": 32},
    },  # the mixed-grid test gives PaDiM the audit evaluator and a pre-processor as nested class paths
    {
        "class_path": "Patchcore",
        "init_args": {"backbone": "resnet18", "pre_trained": False, "layers": ["layer2"]},
    },
    {"class_path": "SimSID", "init_args": {**TINY_MODEL, "max_epochs": 1}},
]


@pytest.fixture(scope="module")
def xray_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench_xrays")
    rng = np.random.default_rng(0)
    for (split, label), count in COUNTS.items():
        (root / split / label).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (SIZE, SIZE), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def _benchmark(
    tmp_path: Path, anomalib_bin: str, root: Path, models: list[dict] = MODELS
) -> subprocess.CompletedProcess:
    config = {
        "accelerator": "cpu",
        "benchmark": {
            "seed": 0,
            "model": {"grid": models},
            "data": {"class_path": "XRayFolder", "init_args": {"root": str(root), "train_batch_size": 4}},
        },
    }
    (tmp_path / "benchmark.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    args = [anomalib_bin, "benchmark", "--config", "benchmark.yaml"]
    return subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def test_mixed_grid_writes_every_models_row(tmp_path: Path, xray_root: Path, anomalib_bin: str) -> None:
    padim = MODELS[0]["init_args"] | {
        "evaluator": yaml.safe_load((CONFIGS / "audit_evaluator.yaml").read_text()),
        "pre_processor": {
            "class_path": "anomalib_simsid.backbones.timm_pre_processor",
            "init_args": {"backbone": "resnet18", "image_size": SIZE},
        },
    }
    models = [{**MODELS[0], "init_args": padim}, *MODELS[1:]]
    result = _benchmark(tmp_path, anomalib_bin, xray_root, models)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    written = list((tmp_path / "runs" / "benchmark").glob("*/results.csv"))
    assert len(written) == 1, result.stdout[-3000:]
    table = pd.read_csv(written[0])
    assert list(table["model.class_path"]) == ["Padim", "Patchcore", "SimSID"]
    assert table["image_AUROC"].between(0, 1).all()
    assert table["model.init_args.max_epochs"].tolist()[2] == 1  # SimSID's own argument, kept
    assert table["model.init_args.max_epochs"].isna().tolist()[:2] == [True, True]  # empty in the others'
    # the nested evaluator was built: PaDiM's row has the audit's matched AUROC, as SimSID's (its default)
    matched = table["image_AUROC_sharpness_matched"]
    assert matched.notna().tolist() == [True, False, True], matched.tolist()
    assert table["image_AUROC_intensity_alone"].between(0, 1).tolist() == [True, False, True]


def test_grid_where_no_job_succeeds_exits_non_zero(tmp_path: Path, anomalib_bin: str) -> None:
    result = _benchmark(tmp_path, anomalib_bin, tmp_path / "missing")
    assert result.returncode == 1
    assert "no job succeeded" in result.stderr
    assert not list((tmp_path / "runs").rglob("results.csv"))


def test_only_grids_naming_simsid_are_changed() -> None:
    assert holds_simsid({"model": {"grid": MODELS}})
    assert holds_simsid({"model": {"class_path": {"grid": ["Padim", "anomalib_simsid.SimSID"]}}})
    assert not holds_simsid({"model": {"grid": MODELS[:2]}, "data": {"class_path": "XRayFolder"}})


@pytest.mark.parametrize("simsid_grid", [True, False])
def test_each_jobs_model_is_built_under_its_seed(tmp_path: Path, simsid_grid: bool) -> None:
    import anomalib.pipelines.benchmark.pipeline  # noqa: F401  (the fixes' target: applies them)
    import torch
    from anomalib.pipelines.benchmark.generator import BenchmarkJobGenerator

    from anomalib_simsid.fixes import benchmark

    args = {
        "seed": 3,
        "model": {"class_path": "Padim", "init_args": {**MODELS[0]["init_args"], "n_features": 8}},
        "data": {"class_path": "XRayFolder", "init_args": {"root": str(tmp_path)}},
    }
    draws = []
    for noise in (1, 2):  # whatever the global generator holds before the benchmark starts
        torch.manual_seed(noise)
        benchmark._GRID["simsid"] = simsid_grid
        (job,) = BenchmarkJobGenerator("cpu").generate_jobs(args, None)
        draws.append(job.model.model.idx.clone())
    benchmark._GRID["simsid"] = False
    # PaDiM's random channel draw: repeatable in a SimSID grid; anomalib's own grids are left as they are
    assert torch.equal(draws[0], draws[1]) == simsid_grid
