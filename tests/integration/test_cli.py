"""The user-facing CLI: `anomalib train --model SimSID --config ...` as a real subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import REPO, TINY_DATA, TINY_MODEL


def _config(tmp_path: Path, digit_root: Path, **model_extra: object) -> Path:
    config = yaml.safe_load((REPO / "configs" / "digitanatomy.yaml").read_text())
    config["default_root_dir"] = str(tmp_path / "results")
    config["trainer"].update({"max_epochs": 2, "enable_progress_bar": False})
    config["model"]["init_args"].update({**TINY_MODEL, **model_extra})
    config["data"]["init_args"].update({"root": str(digit_root), **TINY_DATA, "eval_batch_size": 8})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_literal_train_command_writes_checkpoint_and_metrics(
    tmp_path: Path, digit_root: Path, anomalib_bin: str
) -> None:
    """`--model SimSID` comes *before* `--config`: only the autoload hook makes that resolve.

    Everything the run writes lands under `default_root_dir` (not the current folder); the config's
    `last.ckpt` is the last epoch, beside the best-validation checkpoint.
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    config = _config(tmp_path, digit_root)
    result = _run([anomalib_bin, "train", "--model", "SimSID", "--config", str(config)], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "image_AUROC" in result.stdout
    assert not any(cwd.iterdir()), f"written to the current folder: {list(cwd.iterdir())}"
    checkpoints = tmp_path / "results" / "logs" / "digitanatomy" / "version_0" / "checkpoints"
    best = list(checkpoints.glob("best-*.ckpt"))
    assert len(best) == 1
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1  # the second (last) of 2 epochs, whether or not it was the best
    rows = list(csv.DictReader(next((tmp_path / "results" / "logs").rglob("metrics.csv")).open()))
    assert any(row.get("train_g_loss") for row in rows)
    assert any(row.get("image_AUROC") for row in rows), "validation AUROC was not logged"
    assert sum(1 for row in rows if row.get("train_d_loss")) == 2  # one per epoch


def _fit_losses(tmp_path: Path, digit_root: Path, anomalib_bin: str, seed: int) -> list[str]:
    """Per-epoch training losses of one `anomalib fit` subprocess seeded with ``seed``."""
    tmp_path.mkdir()
    args = [anomalib_bin, "fit", "--model", "SimSID", "--config", str(_config(tmp_path, digit_root))]
    result = _run([*args, "--seed_everything", str(seed), "--trainer.max_epochs", "1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Seed set to {seed}" in result.stdout + result.stderr
    rows = csv.DictReader(next((tmp_path / "results" / "logs").rglob("metrics.csv")).open())
    return [row["train_g_loss"] for row in rows if row.get("train_g_loss")]


@pytest.mark.slow
def test_cli_seed_makes_runs_repeatable(tmp_path: Path, digit_root: Path, anomalib_bin: str) -> None:
    """anomalib 2.7's CLI parses `seed_everything` but never applies it; the autoload hook does."""
    first = _fit_losses(tmp_path / "a", digit_root, anomalib_bin, seed=7)
    second = _fit_losses(tmp_path / "b", digit_root, anomalib_bin, seed=7)
    other = _fit_losses(tmp_path / "c", digit_root, anomalib_bin, seed=8)
    assert first
    assert first == second
    assert other != first


@pytest.mark.parametrize(
    ("extra_args", "expected"),
    [
        (["--model.init_args.memory_size", "3"], "memory_size"),
        (["--model.img_size", "100"], "multiple of 32"),
        (["--model.img_size", "96", "--model.num_patch", "2", "--model.level", "5"], "num_patch * 2**level"),
    ],
)
def test_bad_configuration_is_explained(
    tmp_path: Path, digit_root: Path, anomalib_bin: str, extra_args: list[str], expected: str
) -> None:
    args = [
        anomalib_bin,
        "fit",
        "--model",
        "SimSID",
        "--config",
        str(_config(tmp_path, digit_root)),
        *extra_args,
    ]
    result = _run(args, tmp_path)
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout


def test_unknown_option_in_yaml_is_named(tmp_path: Path, digit_root: Path, anomalib_bin: str) -> None:
    config = _config(tmp_path, digit_root, num_slotz=10)
    result = _run([anomalib_bin, "fit", "--config", str(config)], tmp_path)
    assert result.returncode != 0
    assert "num_slotz" in result.stderr + result.stdout


def test_missing_data_folder_is_named(tmp_path: Path, anomalib_bin: str) -> None:
    missing = tmp_path / "no-such-zhanglab"
    args = [
        anomalib_bin,
        "fit",
        "--config",
        str(REPO / "configs" / "zhanglab.yaml"),
        "--data.root",
        str(missing),
    ]
    args += ["--default_root_dir", str(tmp_path / "results"), "--trainer.logger", "false"]
    result = _run(args, tmp_path)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert str(missing) in output
    assert "chest_xray" in output  # says what layout was expected


@pytest.mark.slow
def test_foreign_checkpoint_is_refused_by_anomalib_test(
    tmp_path: Path, digit_root: Path, anomalib_bin: str
) -> None:
    """`anomalib test --model SimSID --ckpt_path padim.ckpt`: one NotSimSIDError, no missing-key listing."""
    from tests.unit.models.test_lightning_model import save_foreign_checkpoint

    ckpt = save_foreign_checkpoint(tmp_path / "padim.ckpt")
    args = [anomalib_bin, "test", "--config", str(_config(tmp_path, digit_root)), "--ckpt_path", str(ckpt)]
    result = _run(args, tmp_path)
    output = result.stderr + result.stdout
    assert result.returncode != 0
    assert "NotSimSIDError: the checkpoint is not a SimSID checkpoint" in output
    assert "Missing key" not in output
