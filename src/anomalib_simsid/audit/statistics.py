"""Global statistics of an image as a model sees it: the one definition every audit figure uses.

An image is read with the package reader (:func:`anomalib_simsid.data.read_image`: DICOM, 16-bit,
EXIF), made grey (mean of the channels), resized with SimSID's bicubic antialiased resize to
``size`` px and clamped to [0, 1]. The statistics of that grey image are intensity (``mean``), spread
(``std``), percentiles (``p05``, ``p95``), dark and bright fractions, gradient magnitude,
``sharpness`` (mean absolute difference of neighbouring pixels: lower = blurrier), Laplacian
variance and grey-level ``entropy``. The shortcut audit, its statistic baselines, the
:class:`~anomalib_simsid.audit.metrics.MatchedAUROC` metric and ``simsid-audit`` all call
:func:`path_statistics`, so their figures agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

from anomalib_simsid.data.image_io import read_image
from anomalib_simsid.models.simsid.adapters.pre_processing import simsid_resize

STATS = ("mean", "std", "p05", "p95", "dark", "bright", "gradient", "sharpness", "laplacian", "entropy")
AUDIT_SIZE = 128  # px: SimSID's input size, the size of every model in the benchmark suite
BASELINE_STATISTICS = ("mean", "std", "sharpness", "p05", "p95", "entropy")  # the audit's columns
NUISANCES = {"sharpness": "sharpness", "intensity": "mean"}  # metric names -> statistic columns
LABELS = {"mean": "mean intensity"}  # display names where the column name is terse
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def label(statistic: str) -> str:
    """Display name of a statistic ("mean" -> "mean intensity")."""
    return LABELS.get(statistic, statistic)


def statistic_column(nuisance: str) -> str:
    """Map a nuisance name to its statistic column ("intensity" -> "mean"); statistics pass through.

    Raises:
        ValueError: ``nuisance`` is neither a nuisance name nor a statistic.
    """
    if nuisance in NUISANCES:
        return NUISANCES[nuisance]
    if nuisance in STATS:
        return nuisance
    msg = f"nuisance must be one of {sorted(NUISANCES)} or a statistic {STATS}, got {nuisance!r}"
    raise ValueError(msg)


def image_statistics(image: torch.Tensor) -> dict[str, float]:
    """Statistics of one grey image ``(1, H, W)`` in [0, 1].

    Args:
        image: The grey image, already at the audit's size.

    Returns:
        One float per name of :data:`STATS`.
    """
    x = image.float()
    flat = x.flatten()
    gy, gx = torch.gradient(x[0])
    histogram = torch.histc(flat, bins=64, min=0.0, max=1.0) / flat.numel()
    nonzero = histogram[histogram > 0]
    return {
        "mean": flat.mean().item(),
        "std": flat.std().item(),
        "p05": flat.quantile(0.05).item(),
        "p95": flat.quantile(0.95).item(),
        "dark": (flat < 0.05).float().mean().item(),
        "bright": (flat > 0.95).float().mean().item(),
        "gradient": torch.sqrt(gx**2 + gy**2).mean().item(),
        # Forward differences, |dx| and |dy| averaged: lower = blurrier (smaller originals, upscaled).
        "sharpness": 0.5
        * ((x[0, :, 1:] - x[0, :, :-1]).abs().mean() + (x[0, 1:] - x[0, :-1]).abs().mean()).item(),
        "laplacian": F.conv2d(x[None], _LAPLACIAN).var().item(),
        "entropy": -(nonzero * nonzero.log2()).sum().item(),
    }


def model_view(image: torch.Tensor, size: int = AUDIT_SIZE) -> torch.Tensor:
    """Turn a ``(C, H, W)`` image in [0, 1] into the grey ``(1, size, size)`` one the statistics describe."""
    return simsid_resize((size, size))(image).mean(dim=0, keepdim=True).clamp(0, 1)


@lru_cache(maxsize=100_000)
def _file_statistics(path: str, size: int) -> dict[str, float]:
    return image_statistics(model_view(read_image(path), size))


def path_statistics(paths: Sequence[str | Path], size: int = AUDIT_SIZE) -> pd.DataFrame:
    """:func:`image_statistics` of each file as a model sees it (package reader, grey, bicubic ``size`` px).

    Args:
        paths: Image files (any format the package reader takes).
        size: The square size the statistics are taken at.

    Returns:
        One row per path, in order, one column per name of :data:`STATS`. Cached per file and size,
        so repeated audits (every epoch, every metric) read each image once.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 128-px tensors: thread start-up costs ~100x the work on a busy CPU
    try:
        return pd.DataFrame([_file_statistics(str(path), int(size)) for path in paths], columns=list(STATS))
    finally:
        torch.set_num_threads(threads)
