"""The user-facing CLI: `anomalib train --model SimSID --config ...` as a real subprocess."""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import REPO, TINY_DATA, TINY_MODEL, save_foreign_checkpoint


def _config(tmp_path: Path, digit_root: Path, **model_extra: object) -> Path:
    config = yaml.safe_load((REPO / "configs" / "digitanatomy.yaml").read_text())
    config["default_root_dir"] = str(tmp_path / "results")
    config["trainer"].update({"max_epochs": 2, "enable_progress_bar": False})
    config["model"]["init_args"].update({**TINY_MODEL, **model_extra})
    config["data"]["init_args"].update({"root": str(digit_root), **TINY_DATA, "eval_batch_size": 8})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **(extra_env or {})}
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
    """anomalib 2.7's CLI parses `seed_everything` but never applies it; the plugin's `cli_seed` fix does."""
    first = _fit_losses(tmp_path / "a", digit_root, anomalib_bin, seed=7)
    second = _fit_losses(tmp_path / "b", digit_root, anomalib_bin, seed=7)
    other = _fit_losses(tmp_path / "c", digit_root, anomalib_bin, seed=8)
    assert first
    assert first == second
    assert other != first


@pytest.mark.parametrize(
    ("extra_args", "expected", "one_line"),
    [
        (["--model.init_args.memory_size", "3"], "memory_size", False),  # jsonargparse's usage error
        (["--model.img_size", "100"], "multiple of 32", True),
        (["--model.img_size", "96", "--model.num_patch", "2", "--model.level", "5"], "2**level", True),
    ],
)
def test_bad_configuration_is_explained(
    tmp_path: Path, digit_root: Path, anomalib_bin: str, extra_args: list[str], expected: str, one_line: bool
) -> None:
    args = [anomalib_bin, "fit", "--model", "SimSID", "--config", str(_config(tmp_path, digit_root))]
    result = _run([*args, *extra_args], tmp_path)
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout
    if one_line:  # the model's reason, not jsonargparse's "Expected a <class 'NoneType'>" traceback
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, result.stderr[-3000:]
        assert expected in errors[0]
        assert "anomalib_simsid.SimSID" in errors[0]
        assert "NoneType" not in result.stderr
        assert "Traceback" not in result.stderr


def test_unknown_option_in_yaml_is_named(tmp_path: Path, digit_root: Path, anomalib_bin: str) -> None:
    config = _config(tmp_path, digit_root, num_slotz=10)
    result = _run([anomalib_bin, "fit", "--config", str(config)], tmp_path)
    assert result.returncode != 0
    assert "num_slotz" in result.stderr + result.stdout


def test_missing_data_folder_is_named_in_one_line_and_leaves_no_folders(
    tmp_path: Path, anomalib_bin: str
) -> None:
    """A user error prints one line (traceback on request) and the failed run leaves no empty folders."""
    missing = tmp_path / "no-such-zhanglab"
    results = tmp_path / "results"
    args = [anomalib_bin, "fit", "--config", str(REPO / "configs" / "zhanglab.yaml")]
    args += ["--data.root", str(missing), "--default_root_dir", str(results)]
    result = _run(args, tmp_path)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert str(missing) in errors[0]
    assert "chest_xray" in errors[0]  # says what layout was expected
    assert "Traceback" not in output
    assert "ANOMALIB_SIMSID_TRACEBACK=1" in result.stderr
    leftovers = sorted(results.rglob("*"))  # not even empty SimSID/<set> or logs/<name> folders
    assert not leftovers, leftovers

    env = {"ANOMALIB_SIMSID_TRACEBACK": "1"}
    verbose = _run(args, tmp_path, env)
    assert "Traceback" in verbose.stderr + verbose.stdout


@pytest.mark.slow
def test_seed_everything_true_draws_logs_and_saves_a_random_seed(
    tmp_path: Path, digit_root: Path, anomalib_bin: str
) -> None:
    """`seed_everything: true` draws a seed (not always 0), says which, and config.yaml records it."""
    config = _config(tmp_path, digit_root)
    args = [anomalib_bin, "fit", "--model", "SimSID", "--config", str(config), "--seed_everything", "true"]
    result = _run([*args, "--trainer.max_epochs", "1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "No seed found" not in output
    drawn = re.search(r"seed_everything: true drew seed (\d+)", output)
    assert drawn, output[-3000:]
    assert f"Seed set to {drawn.group(1)}" in output
    saved = yaml.safe_load(next((tmp_path / "results").rglob("config.yaml")).read_text())
    assert saved["seed_everything"] == int(drawn.group(1))


@pytest.mark.slow
def test_resumed_cli_run_writes_into_the_same_folders(
    tmp_path: Path, digit_root: Path, anomalib_bin: str
) -> None:
    """`anomalib fit --ckpt_path .../last.ckpt`: one training, one `version_<n>` and one `v<n>`."""
    config = str(_config(tmp_path, digit_root))
    first = _run([anomalib_bin, "fit", "--config", config, "--trainer.max_epochs", "1"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    logs = tmp_path / "results" / "logs" / "digitanatomy"
    last = logs / "version_0" / "checkpoints" / "last.ckpt"
    args = [anomalib_bin, "fit", "--config", config, "--trainer.max_epochs", "2", "--ckpt_path", str(last)]
    resumed = _run(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in logs.iterdir()) == ["version_0"]
    # a fit writes nothing into its v<n> (checkpoints and metrics go under logs/): none is left behind
    assert not (tmp_path / "results" / "SimSID").exists()
    rows = list(csv.DictReader((logs / "version_0" / "metrics.csv").open()))
    assert sorted({row["epoch"] for row in rows if row.get("train_d_loss")}) == ["0", "1"]
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1


@pytest.mark.slow
def test_foreign_or_truncated_checkpoint_is_refused_by_anomalib_test(
    tmp_path: Path, digit_root: Path, anomalib_bin: str
) -> None:
    """`anomalib test --ckpt_path padim.ckpt` or a truncated file: one line naming the file."""
    padim = save_foreign_checkpoint(tmp_path / "padim.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(padim.read_bytes()[:5000])
    config = str(_config(tmp_path, digit_root))
    cases = ((padim, "is not a SimSID checkpoint"), (truncated, "cannot be read as a checkpoint"))
    for ckpt, expected in cases:
        args = [anomalib_bin, "test", "--config", config, "--ckpt_path", str(ckpt)]
        result = _run(args, tmp_path)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: NotSimSIDError")]
        assert len(errors) == 1, result.stderr[-3000:]
        assert str(ckpt) in errors[0]
        assert expected in errors[0]
        assert "Traceback" not in result.stderr + result.stdout
        assert "Missing key" not in result.stderr + result.stdout
