"""Shared test constants: the repository root and a SimSID / DigitAnatomy small enough for CPU tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A SimSID small enough for seconds-long CPU runs; the paper model is tested for shapes and counts.
TINY_MODEL = {"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8}
TINY_DATA = {"image_size": 64, "num_train": 24, "num_val": 6, "num_test": 6}
