"""SimSID's post-processor: anomalib's, with a normalisation that keeps every score's rank.

anomalib 2.7 maps a score to ``(s - threshold) / (max - min) + 0.5`` with ``min``, ``max`` and the
threshold fitted on validation, then clamps to [0, 1]. Every test score beyond the validation range
becomes exactly 0 or 1, and anomalib computes its *test* AUROC from these normalised scores, so the
ties lower it. SimSID's critic logits spread far wider on the test set than on 200 validation images:
the paper model on ZhangLab after 2 epochs ranked test images at 69.3 AUROC by its raw scores and at
57.1 after the clamp. A logistic with the same slope at the threshold keeps the output in [0, 1], the
threshold at 0.5 (every label is unchanged) and the order of all scores, like the paper's own
``1 - sigmoid((s - mu) / sigma)``. The residual map is normalised the same way.
"""

from __future__ import annotations

import torch
from anomalib.post_processing import PostProcessor

# sigmoid'(0) = 1/4: a slope of 4 / (max - min) at the threshold, as anomalib's clamped line has.
SLOPE = 4.0


class SimSIDPostProcessor(PostProcessor):
    """:class:`~anomalib.post_processing.PostProcessor` with a rank-preserving (logistic) normalisation."""

    @staticmethod
    def _normalize(
        preds: torch.Tensor | None,
        norm_min: torch.Tensor,
        norm_max: torch.Tensor,
        threshold: torch.Tensor,
    ) -> torch.Tensor | None:
        if preds is None:
            return preds
        threshold = torch.where(torch.isnan(threshold), (norm_max + norm_min) / 2, threshold)
        value_range = norm_max - norm_min
        zero_range = value_range == 0
        safe_range = torch.where(zero_range, torch.ones_like(value_range), value_range)
        normalized = torch.sigmoid(SLOPE * (preds - threshold) / safe_range)
        degenerate = torch.where(preds > threshold, 1.0, torch.where(preds < threshold, 0.0, 0.5))
        normalized = torch.where(zero_range, degenerate, normalized)
        has_range = ~torch.isnan(norm_min) & ~torch.isnan(norm_max)
        return torch.where(has_range, normalized, preds)
