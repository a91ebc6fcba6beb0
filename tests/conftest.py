"""Run-wide fixtures: offline, a tiny generated DigitAnatomy set, a small SimSID configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
# A SimSID small enough for seconds-long CPU runs; the paper model is tested for shapes and counts.
TINY_MODEL = {"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8}
TINY_DATA = {"image_size": 64, "num_train": 24, "num_val": 6, "num_test": 6}


@pytest.fixture(scope="session")
def digit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DigitAnatomy, generated once per test session."""
    from anomalib_simsid import DigitAnatomy

    root = tmp_path_factory.mktemp("digits") / "DigitAnatomy"
    DigitAnatomy(root=str(root), **TINY_DATA).prepare_data()
    return root


@pytest.fixture
def anomalib_bin() -> str:
    """The installed ``anomalib`` console script of this environment."""
    import shutil
    import sys

    candidate = Path(sys.executable).parent / "anomalib"
    found = str(candidate) if candidate.exists() else shutil.which("anomalib")
    if found is None:
        pytest.fail("the anomalib console script is not installed in this environment")
    return found
