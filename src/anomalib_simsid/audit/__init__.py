"""Is a model seeing the disease or the scanner? The shortcut audit for any model's scores.

One global statistic of a chest X-ray (its sharpness, its mean intensity) can rank a test set as well
as a trained detector when the two classes come from different scanners or sizes. The audit judges a
model's scores on normal/abnormal pairs matched on such a statistic (where the statistic is at
chance), with bootstrap CIs, and, for DICOM or a user's metadata, per acquisition group.

Modules: ``statistics`` (the one definition of each image statistic), ``matching`` (pairs, AUROC,
bootstrap), ``core`` (per-image tables, audit rows), ``metadata`` (acquisition tags and groups),
``report`` (markdown, JSON, plot), ``metrics`` (:class:`MatchedAUROC`, :class:`StatisticAUROC` for an
anomalib ``Evaluator``), ``cli`` (the ``simsid-audit`` command). See ``docs/audit.md``.
"""

from anomalib_simsid.audit.core import MATCH_STATISTICS, Matched, matched_auroc
from anomalib_simsid.audit.matching import Auroc, auroc_ci, match_pairs, matched_auroc_ci
from anomalib_simsid.audit.report import write_audit
from anomalib_simsid.audit.statistics import AUDIT_SIZE, STATS, image_statistics, path_statistics

__all__ = [
    "AUDIT_SIZE",
    "MATCH_STATISTICS",
    "STATS",
    "Auroc",
    "Matched",
    "auroc_ci",
    "image_statistics",
    "match_pairs",
    "matched_auroc",
    "matched_auroc_ci",
    "path_statistics",
    "write_audit",
]
