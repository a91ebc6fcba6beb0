"""The training-speed benchmark: its plain baseline and its report from saved results."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks import train_speed
from tests.helpers import TINY_MODEL


def test_plain_baseline_runs_the_full_pass_on_critic_only_batches() -> None:
    """The product model skips autograd and teacher on critic-only batches; the baseline does not."""
    from anomalib_simsid import SimSID

    plain_variant = train_speed.VARIANTS[train_speed.BASELINE]
    assert plain_variant.plain
    plain = train_speed._plain_class()(**TINY_MODEL, visualizer=False).train()
    ours = SimSID(**TINY_MODEL, visualizer=False).train()
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    assert plain.model(image, full_pass=False).generated.teacher_features is not None
    assert ours.model(image, full_pass=False).generated.teacher_features is None


def test_report_is_rebuilt_from_raw_results_without_running_anything(tmp_path: Path) -> None:
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"header": "Measured somewhere.", "model": "paper"}))
    output = tmp_path / "train_speed.md"
    train_speed.main(["--from-raw", str(raw), "--output", str(output)])
    assert "Measured somewhere." in output.read_text()
