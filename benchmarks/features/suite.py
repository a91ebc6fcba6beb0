"""Feature-space rows of the suite: SimSID's memory and in-painting, and the ridge floor, on cached features.

Like the statistic baselines these are not anomalib models: a suite job builds one, ``fit`` learns
from the cached features of the training normals (:mod:`benchmarks.features.cache`, built on first
use) and ``score`` scores the test split, so the rows sit in ``results.csv``/``scores.csv.gz`` and go
through the same shortcut audit as PaDiM and PatchCore. The cache is checked against the suite's
datamodule image for image, so a row can never score another split than its neighbours in the table.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from benchmarks.features.cache import WORK, build
from benchmarks.features.data import Split, load
from benchmarks.features.floors import PositionGaussian, RidgeInpainting
from benchmarks.features.model import FeatureSimSID, residuals, train

METHODS = ("simsid", "ridge")


class FeatureModel:
    """``simsid``: the validation winner of the exploration; ``ridge``: the linear in-painting floor.

    Both read out the mean over positions of the Mahalanobis distance of the in-painting residual
    (``white_mean``), the read-out the exploration chose on validation.
    """

    def __init__(
        self, method: str, cache: str, epochs: int = 10, masked: bool = True,
        layers: tuple[int, ...] = (1, 2, 3), grid: int = 16, channels: int = 100, slots: int = 200,
        topk: int = 5, lr: float = 1e-3,
    ) -> None:  # fmt: skip
        if method not in METHODS:
            msg = f"method must be one of {METHODS}, got {method!r}"
            raise ValueError(msg)
        self.method, self.cache, self.epochs, self.masked = method, cache, int(epochs), bool(masked)
        self.layers, self.grid, self.channels = tuple(int(v) for v in layers), int(grid), int(channels)
        self.slots, self.topk, self.lr = int(slots), int(topk), float(lr)
        self.work = WORK

    def split(self, name: str, root: str, expected: list[str]) -> Split:
        """Load the cached split ``name`` (built on first use) in the order of ``expected``.

        Refused unless it holds exactly the images of ``expected`` (the datamodule's split).
        """
        if not (self.work / self.cache / name / "images.json").is_file():
            build(self.cache, self.work)
        split = load(self.cache, name, self.layers, self.grid, self.channels, self.work)
        wanted = [os.path.relpath(p, root) for p in expected]
        if sorted(split.images) != sorted(wanted):
            msg = (
                f"{self.work / self.cache / name}: the feature cache holds {len(split.images)} images that "
                f"are not the datamodule's {len(wanted)} {name} images (delete the folder to rebuild it)"
            )
            raise ValueError(msg)
        position = {image: i for i, image in enumerate(split.images)}
        order = np.array([position[w] for w in wanted], dtype=int)
        return Split(split.features[order], split.labels[order], wanted, split.root, split.grid)

    def fit(self, train_split: Split, seed: int) -> dict[str, float]:
        """Learn from the training normals; returns ``epochs`` and seconds (``fit_s``, ``s_per_epoch``)."""
        x = train_split.features
        start = time.perf_counter()
        if self.method == "ridge":
            self.ridge = RidgeInpainting(x, self.grid)
            return {"epochs": 0, "fit_s": time.perf_counter() - start, "s_per_epoch": float("nan")}
        self.mu, self.sd = x.mean((0, 1), keepdims=True), x.std((0, 1), keepdims=True) + 1e-6
        train_z = (x - self.mu) / self.sd
        torch.manual_seed(seed)
        self.model = FeatureSimSID(x.shape[-1], self.grid, self.slots, self.topk, masked=self.masked)
        optimiser = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        seconds = train(self.model, optimiser, train_z, self.epochs, seed)
        self.gaussian = PositionGaussian(residuals(self.model, train_z))  # the read-out's, fit once
        fit_s = time.perf_counter() - start
        return {"epochs": self.epochs, "fit_s": fit_s, "s_per_epoch": float(np.mean(seconds))}

    def score(self, split: Split) -> np.ndarray:
        """Per-image anomaly scores (higher = abnormal)."""
        if self.method == "ridge":
            return self.ridge.distance(split.features).mean(1)
        z = (split.features - self.mu) / self.sd
        return self.gaussian.distance(residuals(self.model, z)).mean(1)  # explore.readouts' white_mean
