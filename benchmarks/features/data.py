"""Cached features as a grid of position vectors: layers chosen, resized to one grid, channels drawn."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from benchmarks.features.cache import WORK

CHANNEL_SEED = 0  # the fixed random channel draw (PaDiM's n_features), the same for every model seed


@dataclass
class Split:
    """One split of one dataset: features ``(N, P, C)`` (P = grid * grid positions, row-major)."""

    features: np.ndarray
    labels: np.ndarray
    images: list[str]
    root: str
    grid: int


def grid_features(blocks: dict[int, np.ndarray], grid: int) -> np.ndarray:
    """Concatenate blocks resized to ``grid`` (area average down, bilinear up) -> ``(N, P, C)`` float32."""
    maps = []
    for _, x in sorted(blocks.items()):
        t = torch.from_numpy(x).float()
        if t.shape[-1] > grid:
            t = F.adaptive_avg_pool2d(t, grid)
        elif t.shape[-1] < grid:
            t = F.interpolate(t, size=(grid, grid), mode="bilinear", align_corners=False)
        maps.append(t)
    return torch.cat(maps, dim=1).flatten(2).transpose(1, 2).contiguous().numpy()


def channel_draw(total: int, n_channels: int | None) -> np.ndarray | None:
    """Draw ``n_channels`` of ``total`` channel indices once (seed ``CHANNEL_SEED``), sorted."""
    if not n_channels or n_channels >= total:  # None or 0: all channels
        return None
    return np.sort(np.random.default_rng(CHANNEL_SEED).choice(total, n_channels, replace=False))


def load(
    dataset: str, split: str, layers: tuple[int, ...] = (1, 2, 3), grid: int = 16,
    n_channels: int | None = 100, work: Path = WORK,
) -> Split:  # fmt: skip
    """Load a cached split (see :mod:`benchmarks.features.cache`) as a grid of position features."""
    folder = work / dataset / split
    blocks = {b: np.load(folder / f"blocks.{b}.npy") for b in layers}
    features = grid_features(blocks, grid)
    pick = channel_draw(features.shape[-1], n_channels)
    if pick is not None:
        features = np.ascontiguousarray(features[..., pick])
    meta = json.loads((folder / "images.json").read_text())
    return Split(features, np.load(folder / "labels.npy").astype(int), meta["images"], meta["root"], grid)
