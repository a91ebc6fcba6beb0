"""The exploration summary judges each score with the audit's sharpness matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from benchmarks.robust_explore import mean_curves, select_on_validation, selected_table, summarise


def _images(folder: Path, seed: int = 0) -> pd.DataFrame:
    """Normals and abnormal images whose sharpness ranges overlap; abnormal ones are blurrier on average."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(40):
        label = int(i >= 16)
        sigma = rng.uniform(0.6, 1.6) if label else rng.uniform(0.3, 1.2)
        pixels = gaussian_filter(rng.uniform(0, 255, (48, 48)), sigma)
        path = folder / f"{'a' if label else 'n'}{i:02d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        rows.append({"image_path": str(path), "label": label, "sigma": sigma})
    return pd.DataFrame(rows)


def test_summary_rows_use_the_audit_matching(tmp_path: Path) -> None:
    images = _images(tmp_path)
    run = tmp_path / "runs" / "paper_s3"
    run.mkdir(parents=True)
    per_image = images.assign(epoch=2, split="val", blur_score=images.sigma, noise=np.arange(len(images)) % 7)
    per_image.to_csv(run / "per_image.csv", index=False)
    pd.DataFrame({"epoch": [2], "wall_s": [12.5]}).to_csv(run / "curves.csv", index=False)

    rows = summarise(tmp_path / "runs", ("blur_score", "noise", "absent"))

    assert set(rows.score) == {"blur_score", "noise"}  # a score the run lacks is left out
    blur = rows[rows.score == "blur_score"].iloc[0]
    assert (blur.config, blur.seed, blur.epoch, blur.split, blur.wall_s) == ("paper", 3, 2, "val", 12.5)
    assert blur.auroc > 0.75  # blur separates the classes on all images ...
    assert blur.rho_sharpness < -0.8  # ... because it is sharpness, measured the audit's way
    assert blur.matched_pairs >= 5
    assert abs(blur.matched_auroc - 0.5) < 0.25  # ... and loses most of that on matched pairs


def test_each_score_is_read_at_the_epoch_of_its_best_validation_auroc(tmp_path: Path) -> None:
    """Suite job folders are runs too; test figures come from the epoch validation chose."""
    images = _images(tmp_path)
    run = tmp_path / "runs" / "ZhangLab-SimSID_robust-seed1"
    run.mkdir(parents=True)
    rng = np.random.default_rng(0)
    good, bad = images.label + rng.normal(0, 0.3, len(images)), rng.normal(0, 1, len(images))
    frames = [  # epoch 1: good on val, bad on test; epoch 2: the other way round
        images.assign(epoch=1, split="val", score=good),
        images.assign(epoch=1, split="test", score=bad),
        images.assign(epoch=2, split="val", score=bad),
        images.assign(epoch=2, split="test", score=good),
    ]
    pd.concat(frames).to_csv(run / "per_image.csv", index=False)
    pd.DataFrame({"epoch": [1, 2], "wall_s": [10.0, 20.0]}).to_csv(run / "curves.csv", index=False)

    rows = summarise(tmp_path / "runs", ("score",))
    chosen = select_on_validation(rows).iloc[0]
    assert (chosen.config, chosen.seed, chosen.epoch, chosen.wall_s) == ("ZhangLab-SimSID_robust", 1, 1, 10.0)
    assert chosen.val_auroc > 0.9
    assert chosen.test_auroc < 0.8  # the test figure of epoch 1, not epoch 2's better one
    assert "| ZhangLab-SimSID_robust | score | 1 | 1 |" in selected_table(select_on_validation(rows))
    curves = mean_curves(rows)
    assert set(curves.columns) >= {"epoch", "score", "split", "auroc"}
    assert len(curves) == 4


def test_a_run_folder_of_another_name_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "no-seed-here"
    run.mkdir(parents=True)
    pd.DataFrame({"epoch": [1]}).to_csv(run / "per_image.csv", index=False)
    with pytest.raises(ValueError, match="no-seed-here"):
        summarise(tmp_path / "runs", ("score",))
