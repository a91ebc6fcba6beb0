"""The benchmark suite end to end on a tiny DigitAnatomy, its failure exit code, and its metric maths.

The smoke run uses ``--inline`` (one process: the per-job subprocess would import anomalib once per
job); the failure test uses the default subprocess isolation, so both paths are covered.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.suite import image_metrics, load_config, oracle_operating_point
from benchmarks.suite.config import SCORES_FILE
from tests.helpers import REPO, TINY_DATA, TINY_MODEL

PREPROCESS = {"class_path": "anomalib_simsid.backbones.timm_pre_processor", "init_args": {"image_size": 64}}
NO_AUGMENTATION = {"train_augmentations": {"class_path": "torchvision.transforms.v2.Identity"}}


def _config(tmp_path, digit_root, models, **extra) -> str:
    config = {
        "name": "ci",
        "output_dir": str(tmp_path / "out"),
        "work_dir": str(tmp_path / "work"),
        "seeds": [0],
        "latency_images": 2,
        "env": {"HF_HUB_OFFLINE": "1"},
        "datasets": [
            {
                "name": "DigitAnatomy",
                "class_path": "anomalib_simsid.DigitAnatomy",
                "init_args": {
                    "root": str(digit_root),
                    **TINY_DATA,
                    "train_batch_size": 8,
                    "eval_batch_size": 8,
                },
            }
        ],
        "models": models,
        **extra,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _run(config: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.suite", "--config", config, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_suite_smoke_writes_every_row_table_and_plots(tmp_path, digit_root):
    resnet = {**PREPROCESS, "init_args": {**PREPROCESS["init_args"], "backbone": "resnet18"}}
    models = [
        {"name": "SimSID", "class_path": "anomalib_simsid.SimSID", "init_args": TINY_MODEL, "max_epochs": 1,
         "select": "best_val_auroc"},
        {"name": "PaDiM", "class_path": "anomalib.models.Padim", "seeds": [0, 1], "data": NO_AUGMENTATION,
         "readouts": ["score", "mean"],
         "init_args": {"backbone": "resnet18", "layers": ["layer1", "layer2"], "pre_trained": False,
                       "n_features": 20, "pre_processor": resnet}},
        {"name": "PatchCore", "class_path": "anomalib.models.Patchcore", "data": NO_AUGMENTATION,
         "init_args": {"backbone": "resnet18", "layers": ["layer2", "layer3"], "pre_trained": False,
                       "coreset_sampling_ratio": 0.1, "pre_processor": resnet}},
    ]  # fmt: skip
    stats = {"image_size": 64, "statistics": ["sharpness"]}
    done = _run(_config(tmp_path, digit_root, models, statistic_baselines=stats), "--inline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    out = tmp_path / "out"
    results = pd.read_csv(out / "results.csv")
    expected = {("SimSID", 0), ("PaDiM", 0), ("PaDiM", 1), ("PatchCore", 0), ("stat: sharpness", 0)}
    assert set(zip(results.model, results.seed, strict=True)) == expected
    assert (results.dataset == "DigitAnatomy").all()
    trained = results[(results.model != "stat: sharpness") & (results.entry != "PaDiM (mean)")]
    for column in ("image_AUROC", "image_AUPR", "image_F1", "image_accuracy", "oracle_accuracy", "oracle_F1",
                   "val_threshold", "fit_s", "latency_ms", "peak_rss_mb"):  # fmt: skip
        assert np.isfinite(trained[column]).all(), column
    assert results.image_AUROC.between(0, 1).all()
    assert (results.n_test == 2 * TINY_DATA["num_test"]).all()
    assert (trained.epochs_run == 1).all()
    stat = results[results.model == "stat: sharpness"].iloc[0]
    assert stat.epochs_run == 0
    assert stat.statistic_sign in (-1, 1)

    # the map's mean, from the same run as PaDiM's own score (the map's max): below it, image for image
    mean_rows = results[results.entry == "PaDiM (mean)"]
    assert sorted(mean_rows.seed) == [0, 1]
    assert mean_rows.val_threshold.isna().all()  # anomalib's threshold belongs to the model's own score
    padim = results[results.model == "PaDiM"]
    assert padim.readout_val_AUROC.between(0, 1).all()  # each read-out scored on validation too
    assert results[results.model != "PaDiM"].readout_val_AUROC.isna().all()
    scores = pd.read_csv(out / SCORES_FILE)
    assert len(scores) == (len(expected) + 2) * 2 * TINY_DATA["num_test"]
    own = scores[scores.entry == "PaDiM"].set_index(["seed", "image"]).score
    mean = scores[scores.entry == "PaDiM (mean)"].set_index(["seed", "image"]).score.loc[own.index]
    assert (mean.to_numpy() < own.to_numpy()).all()
    summary = (out / "summary.md").read_text()
    assert "| PaDiM | 2 (0, 1) |" in summary
    assert "| PaDiM (mean) | 2 (0, 1) |" in summary
    assert "oracle" in summary
    assert "| stat: sharpness |" in summary.split("Statistic baselines, not models")[1]
    assert "| stat: sharpness |" not in summary.split("Statistic baselines, not models")[0]
    audit = (out / "audit.md").read_text()
    assert "| model | seed | test AUROC | 95% CI | sharpness-matched AUROC |" in audit
    assert (out / "audit_DigitAnatomy.png").is_file()
    assert (out / "matched_DigitAnatomy_sharpness.csv").is_file()
    for name in ("roc_DigitAnatomy.png", "hist_DigitAnatomy.png"):
        assert (out / name).stat().st_size > 10_000
    assert not list((tmp_path / "work").rglob("*.ckpt")), "checkpoints are deleted once scored by default"


@pytest.mark.slow
def test_smoke_config_tests_last_and_best_of_one_run_and_keeps_checkpoints(tmp_path, digit_root):
    """benchmarks/configs/smoke.yaml's SimSID: validated every epoch, tested at last and best, kept."""
    done = _run(
        str(REPO / "benchmarks" / "configs" / "smoke.yaml"),
        "--inline", "--models", "SimSID", "--keep-checkpoints",
        "--data-root", f"DigitAnatomy={digit_root}",
        "--output-dir", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = pd.read_csv(tmp_path / "out" / "results.csv").set_index("select")
    assert sorted(results.index) == ["best_val_auroc", "last"]
    assert results.spec_hash.nunique() == 1  # one job
    assert results.fit_s.nunique() == 1  # one training run
    assert (results.epochs_run == 2).all()
    history = json.loads(results.val_history["last"])
    assert [h["epoch"] for h in history] == [0, 1]  # a validation at the end of every epoch
    assert results.selected_epoch["last"] == 1
    assert results.selected_val_AUROC["last"] == pytest.approx(history[-1]["image_AUROC"], abs=1e-4)
    assert results.selected_val_AUROC["best_val_auroc"] == pytest.approx(
        max(h["image_AUROC"] for h in history), abs=1e-4
    )
    for select in ("last", "best_val_auroc"):
        assert Path(results.checkpoint_path[select]).is_file(), select
    job = tmp_path / "work" / "jobs" / "DigitAnatomy-SimSID-seed0"  # curves: true
    curves = pd.read_csv(job / "curves.csv")
    assert sorted(curves.epoch.unique()) == [1, 2]
    assert {"critic_recon", "critic_input", "lowpass_residual"} <= set(curves.score)
    per_image = pd.read_csv(job / "per_image.csv")
    expected = {(e, s): 2 * TINY_DATA[f"num_{s}"] for e in (1, 2) for s in ("val", "test")}
    assert per_image.groupby(["epoch", "split"]).size().to_dict() == expected

    scores = pd.read_csv(tmp_path / "out" / SCORES_FILE)
    assert scores.groupby("entry").size().to_dict() == {
        "SimSID, best val": 2 * TINY_DATA["num_test"],
        "SimSID, last": 2 * TINY_DATA["num_test"],
    }
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| SimSID, last | 1 (0) |" in summary
    assert "| SimSID, best val | 1 (0) |" in summary
    assert "| 2 / 2 | last: epoch 1 step" in summary  # the budget: epochs run / max, in the row
    assert "| PaDiM | not run (max 1 epoch; seeds 0; see Notes) |" in summary


@pytest.mark.slow
def test_failed_job_fails_the_command(tmp_path, digit_root):
    models = [{"name": "Broken", "class_path": "anomalib.models.NoSuchModel", "max_epochs": 1}]
    done = _run(_config(tmp_path, digit_root, models))  # subprocess isolation (the default)
    assert done.returncode == 1
    assert "DigitAnatomy-Broken-seed0" in done.stderr
    assert "NoSuchModel" in done.stderr
    assert "FAILED" in (tmp_path / "out" / "summary.md").read_text()


def test_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "datasets": [{"name": "d", "class_path": "x.Y"}],
        "models": [{"name": "m", "class_path": "x.Z", "epochs": 3}],
    }))  # fmt: skip
    with pytest.raises(ValueError, match="epochs"):
        load_config(path)


def _brute_force_oracle(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    best = (-1.0, 0.0)
    for threshold in [math.inf, *sorted(set(scores.tolist()), reverse=True)]:
        pred = scores >= threshold
        tp, fp = int((pred & (labels == 1)).sum()), int((pred & (labels == 0)).sum())
        fn = int((~pred & (labels == 1)).sum())
        accuracy = float((pred == labels.astype(bool)).mean())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if accuracy > best[0]:
            best = (accuracy, f1)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_oracle_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding creates ties
    found = oracle_operating_point(labels, scores)
    accuracy, f1 = _brute_force_oracle(labels, scores)
    assert found["oracle_accuracy"] == pytest.approx(accuracy)
    assert found["oracle_F1"] == pytest.approx(f1)


def test_image_metrics_at_validation_threshold():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.9])
    m = image_metrics(labels, scores, threshold=0.55)  # predictions: 0 0 1 0 1 1
    assert m["image_AUROC"] == pytest.approx(8 / 9)
    assert m["image_accuracy"] == pytest.approx(4 / 6)
    assert m["image_F1"] == pytest.approx(2 / 3)
    assert m["oracle_accuracy"] == pytest.approx(5 / 6)
    with pytest.raises(FloatingPointError):
        image_metrics(labels, np.array([0.1, np.nan, 0.3, 0.4, 0.5, 0.6]), 0.5)
