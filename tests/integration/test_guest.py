"""The plugin is a guest: with it installed, another anomalib model runs exactly as without it.

A tiny PaDiM (random resnet18, no download) trains, tests and predicts through the ``anomalib`` CLI
on the DigitAnatomy images read by anomalib's own ``Folder``, once with the plugin's autoload hook
(which imports the plugin and its fixes) and once with ``ANOMALIB_SIMSID_NO_AUTOLOAD=1`` (the plugin
is never imported). Both runs must write the same files, the same saved config (``seed_everything:
true``, not a seed the plugin chose) and the same metrics; the predict folder holds PNGs and one
DICOM file, which anomalib skips (the plugin's reader is for SimSID only).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.unit.data.fixtures import write_dicom

PADIM = ["--model", "Padim", "--model.backbone", "resnet18", "--model.pre_trained", "false"]
PADIM += ["--model.layers", "[layer1]", "--model.n_features", "20"]


# The `anomalib` console script with torch's global RNG seeded first: torch seeds itself from the OS
# at start and anomalib 2.7 never seeds, so two plain PaDiM runs differ without it (random backbone,
# random feature subset). The plugin's seeding is for SimSID runs only.
_SEEDED_ANOMALIB = """
import sys, torch
torch.manual_seed(0)
from anomalib.cli.cli import main
sys.argv = ["anomalib", *sys.argv[1:]]
main()
"""


def _anomalib(args: list[str], cwd: Path, plugin: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("ANOMALIB_SIMSID_NO_AUTOLOAD", None)
    env.pop("ANOMALIB_SIMSID_NO_FIXES", None)
    if not plugin:
        env["ANOMALIB_SIMSID_NO_AUTOLOAD"] = "1"
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", _SEEDED_ANOMALIB, *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def _metrics(output: str) -> dict[str, str]:
    """The rows of Lightning's test-metrics table."""
    return dict(re.findall(r"│\s+(image_\w+)\s+│\s+([-\d.e]+)\s+│", output))


def _tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def _run_padim(work: Path, digit_root: Path, plugin: bool) -> dict[str, object]:
    data = ["--data", "Folder", "--data.name", "digits", "--data.root", str(digit_root), "--data.seed", "0"]
    data += ["--data.normal_dir", "train/good", "--data.abnormal_dir", "test/anomalous"]
    data += ["--data.normal_test_dir", "test/good", "--data.num_workers", "0"]
    trainer = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    train = _anomalib(["train", *PADIM, *data, *trainer, "--default_root_dir", "results"], work, plugin)
    assert train.returncode == 0, train.stderr[-3000:]
    run = work / "results" / "Padim" / "digits" / "v0"
    config = (run / "config.yaml").read_text().replace(str(work), "<work>")

    predict_dir = work / "to_predict"
    predict_dir.mkdir()
    for image in sorted((digit_root / "test" / "good").glob("*.png"))[:2]:
        shutil.copy(image, predict_dir / image.name)
    write_dicom(predict_dir / "scan.dcm", np.arange(4096, dtype=np.uint16).reshape(64, 64))
    ckpt = run / "weights" / "lightning" / "model.ckpt"
    args = ["predict", *PADIM, "--data", str(predict_dir), "--ckpt_path", str(ckpt)]
    predict = _anomalib([*args, "--default_root_dir", "predicted"], work, plugin)
    return {
        "train_metrics": _metrics(train.stdout),
        "tree": _tree(work / "results"),
        "config": config,
        "predict_rc": predict.returncode,
        "predicted": _tree(work / "predicted") if (work / "predicted").exists() else [],
    }


@pytest.mark.slow
def test_padim_runs_the_same_with_and_without_the_plugin(tmp_path: Path, digit_root: Path) -> None:
    with_plugin = _run_padim(tmp_path / "with", digit_root, plugin=True)
    without = _run_padim(tmp_path / "without", digit_root, plugin=False)
    assert without["train_metrics"], "no test metrics printed"
    assert "seed_everything: true" in str(without["config"])
    assert without["predict_rc"] == 0
    assert any(name.endswith(".png") for name in without["predicted"])
    assert with_plugin == without
