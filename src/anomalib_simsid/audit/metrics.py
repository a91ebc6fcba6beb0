"""The shortcut audit as anomalib metrics: any model's ``Evaluator`` reports matched AUROCs.

``MatchedAUROC(nuisance="sharpness")`` logs ``image_AUROC_sharpness_matched``: the image AUROC of
``pred_score`` on normal/abnormal test pairs of equal sharpness (closest pairs first, within a
caliper of 0.1 SD: :func:`~anomalib_simsid.audit.matching.match_pairs`), on which sharpness alone is
at chance. ``StatisticAUROC(nuisance="sharpness")`` logs ``image_AUROC_sharpness_alone``, the floor:
how well the statistic alone separates the classes (either direction). A model whose
``image_AUROC`` sits at or below the floor, or falls on matched pairs, follows acquisition.

The statistic is the audit's (:mod:`anomalib_simsid.audit.statistics`): by default each image is
read again from ``image_path`` with the package reader, grey, bicubic to 128 px. anomalib hands the
evaluator the batch *after* the model's pre-processor (PaDiM: 256 px bilinear, ImageNet
normalisation; SimSID: 128 px bicubic, [-1, 1]), so a statistic of ``batch.image`` would change
with the model; reading the file gives every model, ``simsid-audit`` and the suite's tables the
same pairs. ``source="image"`` uses ``batch.image`` instead (undoing ``image_mean``/``image_std``),
for batches without paths.

Distributed runs: the states (statistic, score, label, a 64-bit hash of the path) are gathered
across ranks by torchmetrics before matching, and images repeated by a ``DistributedSampler``'s
padding are counted once (by path; ``source="image"`` cannot tell repeats apart). Fewer than
``min_pairs`` matched pairs, or a class missing, give ``nan`` and a warning, never a number.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from anomalib.metrics import AnomalibMetric
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from anomalib_simsid.audit.matching import CALIPER_SD, MIN_PAIRS, auroc_ci, match_pairs, matched_auroc_ci
from anomalib_simsid.audit.statistics import (
    AUDIT_SIZE,
    image_statistics,
    model_view,
    path_statistics,
    statistic_column,
)

SOURCES = ("path", "image")


class AuditMetricWarning(UserWarning):
    """A matched or statistic AUROC could not be computed (too few pairs, one class); it is ``nan``."""


def path_key(path: str) -> int:
    """Return a 64-bit key of ``path``, the same in every process (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(str(path).encode(), digest_size=8).digest(), "little", signed=True)


class _NuisanceMetric(Metric):
    """Collect score, label and one image statistic per image; subclasses turn them into an AUROC.

    A plain torchmetrics metric (tensors in); :class:`MatchedAUROC` and :class:`StatisticAUROC` add
    anomalib's batch-field reading on top, as anomalib's own metrics do.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    suffix = ""

    def __init__(
        self,
        nuisance: str = "sharpness",
        source: str = "path",
        image_size: int = AUDIT_SIZE,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        if source not in SOURCES:
            msg = f"source must be one of {SOURCES}, got {source!r}"
            raise ValueError(msg)
        self.statistic = statistic_column(nuisance)
        self.source, self.image_size = source, int(image_size)
        self.image_mean = None if image_mean is None else torch.tensor(image_mean).view(-1, 1, 1)
        self.image_std = None if image_std is None else torch.tensor(image_std).view(-1, 1, 1)
        super().__init__(**kwargs)
        self.name = f"AUROC_{nuisance}_{self.suffix}"  # anomalib's subclasses prefix it
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.add_state("keys", default=[], dist_reduce_fx="cat")

    def _values(self, images: Any) -> torch.Tensor:
        if self.source == "path":
            stats = path_statistics(list(images), self.image_size)[self.statistic]
            return torch.tensor(stats.to_numpy(dtype=np.float64, copy=True))
        images = images.detach().float().cpu()
        if self.image_std is not None:
            images = images * self.image_std
        if self.image_mean is not None:
            images = images + self.image_mean
        values = [image_statistics(model_view(image, self.image_size))[self.statistic] for image in images]
        return torch.tensor(values, dtype=torch.float64)

    def update(self, pred_score: torch.Tensor, gt_label: torch.Tensor, images: Any) -> None:
        """Add a batch: scores, labels and the statistic of each image (from its file or the batch)."""
        scores = pred_score.detach().reshape(-1).double().cpu()
        labels = gt_label.detach().reshape(-1).long().cpu()
        self.scores.append(scores)
        self.labels.append(labels)
        self.values.append(self._values(images))
        keys = [path_key(p) for p in images] if self.source == "path" else [-1] * len(scores)
        self.keys.append(torch.tensor(keys, dtype=torch.int64))

    def _gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Scores, labels, statistics (one row per distinct image, order-free), or ``None`` with a warning."""
        if not self.scores:
            self._warn("no images were seen")
            return None
        scores, labels, values, keys = (
            dim_zero_cat(s).cpu().numpy() for s in (self.scores, self.labels, self.values, self.keys)
        )
        if self.source == "path":  # a DistributedSampler pads with repeats: count each image once
            keys, first = np.unique(keys, return_index=True)
            scores, labels, values = scores[first], labels[first], values[first]
        order = np.lexsort((keys, values))  # the same rows on any number of ranks, in any order
        scores, labels, values = scores[order], labels[order], values[order]
        if len(np.unique(labels)) < 2:
            self._warn(f"the {len(labels)} image(s) hold one class only")
            return None
        return scores, labels, values

    def _warn(self, reason: str) -> None:
        warnings.warn(f"{self.name} is nan: {reason}", AuditMetricWarning, stacklevel=3)


class _Matched(_NuisanceMetric):
    """AUROC of the scores over normal/abnormal pairs matched on the statistic (see :class:`MatchedAUROC`)."""

    suffix = "matched"

    def __init__(
        self,
        nuisance: str = "sharpness",
        source: str = "path",
        image_size: int = AUDIT_SIZE,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        caliper_sd: float = CALIPER_SD,
        min_pairs: int = MIN_PAIRS,
        **kwargs: Any,
    ) -> None:
        super().__init__(nuisance, source, image_size, image_mean, image_std, **kwargs)
        self.caliper_sd, self.min_pairs = float(caliper_sd), int(min_pairs)
        self.pairs = 0  # matched pairs of the last compute, for a caller that wants the count

    def compute(self) -> torch.Tensor:
        """Return the AUROC over the matched pairs (``nan`` and a warning below ``min_pairs``)."""
        got = self._gathered()
        self.pairs = 0
        if got is None:
            return torch.tensor(float("nan"))
        scores, labels, values = got
        pairs = match_pairs(values, labels, self.caliper_sd)
        self.pairs = len(pairs)
        if len(pairs) < self.min_pairs:
            self._warn(
                f"{len(pairs)} matched pair(s) within {self.caliper_sd} SD of {self.statistic} among "
                f"{len(labels)} images; at least {self.min_pairs} are needed"
            )
            return torch.tensor(float("nan"))
        auroc = matched_auroc_ci(scores[pairs[:, 0]], scores[pairs[:, 1]], draws=0)
        return torch.tensor(auroc.value)


class _Alone(_NuisanceMetric):
    """AUROC of the statistic itself, either direction (see :class:`StatisticAUROC`)."""

    suffix = "alone"

    def compute(self) -> torch.Tensor:
        """Return max(AUROC, 1 - AUROC) of the statistic against the labels (``nan`` with one class)."""
        got = self._gathered()
        if got is None:
            return torch.tensor(float("nan"))
        _, labels, values = got
        value = auroc_ci(labels, values, draws=0).value
        return torch.tensor(max(value, 1.0 - value))


def _fields(fields: Sequence[str] | None, source: str) -> list[str]:
    return list(fields or ["pred_score", "gt_label", "image_path" if source == "path" else "image"])


class MatchedAUROC(AnomalibMetric, _Matched):  # type: ignore[misc]
    """Image AUROC on normal/abnormal pairs of equal ``nuisance`` (sharpness, intensity or a statistic).

    Logged as ``<prefix>AUROC_<nuisance>_matched``, e.g. ``image_AUROC_sharpness_matched``.

    Args:
        nuisance: What to match on: ``"sharpness"``, ``"intensity"`` (mean grey level) or any name of
            :data:`~anomalib_simsid.audit.statistics.STATS`.
        source: ``"path"`` (default: the audit's statistic of the file) or ``"image"`` (of ``batch.image``).
        image_size: Size the statistic is taken at (the audit's 128 px).
        image_mean: With ``source="image"``, the pre-processor's normalisation mean to undo.
        image_std: With ``source="image"``, the pre-processor's normalisation std to undo.
        caliper_sd: Largest difference within a pair, in standard deviations of the statistic.
        min_pairs: Fewer matched pairs give ``nan`` and a warning.
        fields: Batch fields (default ``pred_score``, ``gt_label``, ``image_path`` or ``image``).
        prefix: Name prefix.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    def __init__(
        self,
        nuisance: str = "sharpness",
        source: str = "path",
        image_size: int = AUDIT_SIZE,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        caliper_sd: float = CALIPER_SD,
        min_pairs: int = MIN_PAIRS,
        fields: Sequence[str] | None = None,
        prefix: str = "image_",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            fields=_fields(fields, source),
            prefix=prefix,
            nuisance=nuisance,
            source=source,
            image_size=image_size,
            image_mean=image_mean,
            image_std=image_std,
            caliper_sd=caliper_sd,
            min_pairs=min_pairs,
            **kwargs,
        )
        self.name = f"{prefix}AUROC_{nuisance}_matched"


class StatisticAUROC(AnomalibMetric, _Alone):  # type: ignore[misc]
    """The floor: image AUROC of the ``nuisance`` statistic alone, whichever direction separates better.

    Logged as ``<prefix>AUROC_<nuisance>_alone``: how much of the test set one acquisition statistic
    ranks with no model at all. Arguments as :class:`MatchedAUROC`, without the matching ones.
    """

    def __init__(
        self,
        nuisance: str = "sharpness",
        source: str = "path",
        image_size: int = AUDIT_SIZE,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        fields: Sequence[str] | None = None,
        prefix: str = "image_",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            fields=_fields(fields, source),
            prefix=prefix,
            nuisance=nuisance,
            source=source,
            image_size=image_size,
            image_mean=image_mean,
            image_std=image_std,
            **kwargs,
        )
        self.name = f"{prefix}AUROC_{nuisance}_alone"


def audit_metrics(nuisances: Sequence[str] = ("sharpness", "intensity")) -> list[AnomalibMetric]:
    """Return the matched AUROC and the statistic-alone floor for each nuisance (for an ``Evaluator``)."""
    return [m for n in nuisances for m in (MatchedAUROC(n), StatisticAUROC(n))]
