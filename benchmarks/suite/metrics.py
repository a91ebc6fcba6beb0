"""Image-level metrics from raw test scores (scikit-learn), including the papers' oracle operating point."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score, roc_curve

METRICS = ("image_AUROC", "image_AUPR", "image_F1", "image_accuracy", "oracle_accuracy", "oracle_F1")


def oracle_operating_point(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Accuracy and F1 at the threshold maximising accuracy on this very set (SimSID's reporting).

    Predicts "anomalous" for ``score >= threshold``; ties in accuracy go to the highest threshold,
    as iterating the ROC thresholds from the top does in the original evaluation code.
    """
    labels = np.asarray(labels).astype(np.int64)
    positives, n = int(labels.sum()), len(labels)
    # Every distinct score is a cut (drop_intermediate=False); the first threshold (inf) flags nothing.
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    tp, fp = np.rint(tpr * positives), np.rint(fpr * (n - positives))
    accuracy = (tp + (n - positives - fp)) / n
    f1 = np.divide(2 * tp, 2 * tp + fp + (positives - tp), out=np.zeros(len(tp)), where=tp > 0)
    best = int(np.argmax(accuracy))  # the first maximum: the highest threshold
    return {
        "oracle_accuracy": float(accuracy[best]),
        "oracle_F1": float(f1[best]),
        "oracle_threshold": float(thresholds[best]),
    }


def image_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC/AUPR (threshold-free), F1/accuracy at ``threshold`` (``score > threshold``), oracle point."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        msg = f"{int((~np.isfinite(scores)).sum())} test scores are not finite"
        raise FloatingPointError(msg)
    if set(np.unique(labels)) != {0, 1}:
        msg = "the test set needs normal and anomalous images for AUROC"
        raise ValueError(msg)
    out = {
        "image_AUROC": float(roc_auc_score(labels, scores)),
        "image_AUPR": float(average_precision_score(labels, scores)),
        "val_threshold": float(threshold),
    }
    if math.isfinite(threshold):
        pred = scores > threshold
        out["image_F1"] = float(f1_score(labels, pred, zero_division=0))
        out["image_accuracy"] = float(accuracy_score(labels, pred))
    else:
        out["image_F1"] = out["image_accuracy"] = math.nan
    out.update(oracle_operating_point(labels, scores))
    return out
