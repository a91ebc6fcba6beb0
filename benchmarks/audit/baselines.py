"""Statistic baselines: "models" with no training that score an image by one global statistic.

Each scores an image as the models see it (:func:`anomalib_simsid.audit.path_statistics`: grey,
bicubic to the models' input size) by one statistic, with the sign that ranks abnormal images higher on the
validation split. A statistic that rivals the trained models is a shortcut they may be taking too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from anomalib_simsid.audit.report import PREFIX
from anomalib_simsid.audit.statistics import AUDIT_SIZE as MODEL_SIZE
from anomalib_simsid.audit.statistics import BASELINE_STATISTICS, label, path_statistics

__all__ = ["BASELINE_STATISTICS", "StatisticBaseline", "label"]


class StatisticBaseline:
    """Score = ``sign`` x one statistic of the image; ``fit`` picks the sign on validation images."""

    def __init__(self, statistic: str, image_size: int = MODEL_SIZE) -> None:
        if statistic not in BASELINE_STATISTICS:
            msg = f"statistic must be one of {BASELINE_STATISTICS}, got {statistic!r}"
            raise ValueError(msg)
        self.statistic, self.image_size, self.sign = statistic, int(image_size), 1.0

    @property
    def name(self) -> str:
        """The result row's name."""
        return PREFIX + label(self.statistic)

    def values(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Return the statistic of each image (unsigned)."""
        return path_statistics(paths, self.image_size)[self.statistic].to_numpy(dtype=np.float64)

    def fit(self, paths: Sequence[str | Path], labels: Sequence[int]) -> float:
        """Choose the sign on validation (abnormal ranked higher); return the signed validation AUROC."""
        auroc = float(roc_auc_score(np.asarray(labels).astype(int), self.values(paths)))
        self.sign = 1.0 if auroc >= 0.5 else -1.0
        return max(auroc, 1.0 - auroc)

    def score(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Anomaly scores (higher = abnormal)."""
        return self.sign * self.values(paths)
