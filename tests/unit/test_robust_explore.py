"""The exploration summary judges each score with the audit's sharpness matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from benchmarks.robust_explore import summarise


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
