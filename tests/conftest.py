"""Run-wide fixtures: offline, a tiny generated DigitAnatomy set; integration tests marked ``slow``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.helpers import TINY_DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every integration test is ``slow``, so ``pytest -m 'not slow'`` is the unit lane (about a minute)."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)


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
