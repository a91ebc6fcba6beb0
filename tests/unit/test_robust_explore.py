"""The exploration summary's sharpness matching: balanced, within the caliper, deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from benchmarks.robust_explore import CALIPER_SD, matched_pairs


def _frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    normal = rng.normal(1.0, 0.2, 60)
    abnormal = rng.normal(0.8, 0.2, 140)  # abnormal images are blurrier, as on ZhangLab
    return pd.DataFrame(
        {
            "image_path": [f"n{i:03d}" for i in range(60)] + [f"a{i:03d}" for i in range(140)],
            "label": [0] * 60 + [1] * 140,
            "sharpness": np.concatenate([normal, abnormal]),
        }
    )


def test_matching_is_balanced_within_the_caliper_deterministic_and_removes_the_shortcut() -> None:
    frame = _frame(0)
    matched = matched_pairs(frame)
    assert (matched.label == 0).sum() == (matched.label == 1).sum() > 30
    assert matched.equals(matched_pairs(frame.sample(frac=1, random_state=1)).loc[matched.index])
    normals = matched[matched.label == 0].sharpness.sort_values().to_numpy()
    abnormal = matched[matched.label == 1].sharpness.sort_values().to_numpy()
    # Each pair is within the caliper, hence so are the sorted sequences, element by element.
    assert np.abs(normals - abnormal).max() <= CALIPER_SD * frame.sharpness.std() + 1e-12
    # Scoring by blur alone: far from chance on all images, near chance on the matched pairs.
    assert roc_auc_score(frame.label, -frame.sharpness) > 0.7
    assert abs(roc_auc_score(matched.label, -matched.sharpness) - 0.5) < 0.1
