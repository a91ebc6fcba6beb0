"""One line naming the path: read-only root, export of a truncated checkpoint, INT8 without data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TINY_MODEL, save_foreign_checkpoint

MODEL = ["--model", "SimSID", *(f"--model.{key}={value}" for key, value in TINY_MODEL.items())]
READ_ONLY = Path("/sys/anomalib_simsid_test")  # not writable, even for root (sysfs)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ANOMALIB_SIMSID_TRACEBACK"}
    env |= {"HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.fixture
def truncated(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(save_foreign_checkpoint(tmp_path / "padim.ckpt").read_bytes()[:5000])
    return path


def test_read_only_default_root_dir_is_named(tmp_path: Path, digit_root: Path, anomalib_bin: str) -> None:
    images = next((digit_root / "test").iterdir())
    args = [anomalib_bin, "predict", *MODEL, "--data", str(images), "--default_root_dir", str(READ_ONLY)]
    line = _one_error_line(_run(args, tmp_path))
    assert "PermissionError" in line
    assert str(READ_ONLY) in line


def test_export_of_a_truncated_checkpoint_names_it(
    tmp_path: Path, truncated: Path, anomalib_bin: str
) -> None:
    args = [anomalib_bin, "export", *MODEL, "--export_type", "openvino", "--ckpt_path", str(truncated)]
    line = _one_error_line(_run([*args, "--default_root_dir", str(tmp_path / "out")], tmp_path))
    assert f"{truncated} cannot be read as a checkpoint" in line
    assert not (tmp_path / "out").exists()


def test_int8_export_without_data_is_one_line(tmp_path: Path, anomalib_bin: str) -> None:
    args = [anomalib_bin, "export", *MODEL, "--export_type", "openvino", "--compression_type", "INT8_PTQ"]
    line = _one_error_line(_run([*args, "--default_root_dir", str(tmp_path / "out")], tmp_path))
    assert "ExportArgumentError" in line
    assert "add --data <datamodule>" in line
