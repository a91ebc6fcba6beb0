"""``make paper-schedule``: the paper's ZhangLab run as one resumable command (composition only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.paper_schedule import CONFIG, fit_command


def args(out: Path) -> argparse.Namespace:
    return argparse.Namespace(
        root="data",
        out=str(out),
        epochs=1000,
        val_every=10,
        precision="32-true",
        accelerator="auto",
        workers=4,
    )


def test_schedule_is_the_shipped_config_with_curves_cache_and_validation_every_n(tmp_path: Path) -> None:
    command = fit_command(args(tmp_path))
    line = " ".join(command)
    assert command[1] == "fit"
    assert f"--config {CONFIG}" in line
    assert "--trainer.max_epochs 1000" in line
    assert "--trainer.check_val_every_n_epoch 10" in line
    assert "--trainer.callbacks+=anomalib_simsid.models.simsid.adapters.score_curves.ScoreCurves" in line
    assert "--data.image_cache memory" in line
    assert "--trainer.devices 1" in line
    assert "--ckpt_path" not in line


def test_schedule_resumes_from_the_newest_last_checkpoint(tmp_path: Path) -> None:
    import os

    old = tmp_path / "logs" / "zhanglab" / "version_0" / "checkpoints" / "last.ckpt"
    new = tmp_path / "logs" / "zhanglab" / "version_1" / "checkpoints" / "last.ckpt"
    for i, path in enumerate((old, new)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (1000 + i, 1000 + i))
    command = fit_command(args(tmp_path))
    assert command[-2:] == ["--ckpt_path", str(new)]
