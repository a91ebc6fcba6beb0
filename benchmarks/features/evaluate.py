"""Plain and sharpness-matched AUROC of per-image scores, with the audit's one matching definition.

The pairs come from :func:`anomalib_simsid.audit.core.pairs_table` on the audit's image statistics (the
images as the models see them, 128 px); they depend only on the split, so they are computed once per
split and stored under ``benchmarks/work/features/<dataset>/<split>/pairs_sharpness.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomalib_simsid.audit.core import image_table, pairs_table
from anomalib_simsid.audit.matching import DRAWS, Auroc, auroc_ci, matched_auroc_ci
from benchmarks.features.cache import WORK
from benchmarks.features.data import Split


@dataclass
class Scored:
    """Plain and sharpness-matched AUROC (with CIs when drawn)."""

    auroc: Auroc
    matched: Auroc


class Evaluator:
    """AUROC and sharpness-matched AUROC on one split, pairs computed once."""

    def __init__(self, dataset: str, split_name: str, split: Split, work: Path = WORK) -> None:
        self.labels = split.labels
        cache = work / dataset / split_name / "pairs_sharpness.csv"
        if cache.is_file():
            pairs = pd.read_csv(cache)
        else:
            frame = pd.DataFrame({"image": split.images, "label": split.labels})
            pairs = pairs_table(image_table(frame, split.root), "sharpness")
            pairs.to_csv(cache, index=False)
        index = {name: i for i, name in enumerate(split.images)}
        self.normal = np.array([index[n] for n in pairs.normal])
        self.abnormal = np.array([index[a] for a in pairs.abnormal])

    def __call__(self, scores: np.ndarray, draws: int = 0) -> Scored:
        """AUROC of ``scores`` (higher = abnormal); ``draws > 0`` adds the audit's bootstrap CIs."""
        scores = np.asarray(scores, dtype=np.float64)
        return Scored(
            auroc_ci(self.labels, scores, draws),
            matched_auroc_ci(scores[self.normal], scores[self.abnormal], draws),
        )

    @property
    def pairs(self) -> int:
        """Number of sharpness-matched pairs."""
        return len(self.normal)


__all__ = ["DRAWS", "Evaluator", "Scored"]
