"""Acquisition metadata: does the scanner (site, view...) predict the label; does the model hold within it.

For each attribute that varies over the audited images (a DICOM acquisition tag, or a column of the
user's metadata CSV such as ``site``) the audit gives:

* the **attribute's AUROC alone**: how well acquisition predicts the label. A categorical attribute
  scores each image by its group's abnormal fraction (the best ordering of the groups, so an
  in-sample, upper figure); a numeric one with more than :data:`MAX_GROUPS` values scores by the value
  itself, either direction. 0.5: acquisition says nothing about the label; 1.0: it gives the label away.
* the **model's AUROC within each group** holding both classes (numeric attributes: within quartile
  bins), with a bootstrap CI where each class has at least :data:`MIN_PER_CLASS_CI` images. A model
  whose AUROC holds within every group is not riding the attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from anomalib_simsid.audit.matching import DRAWS, SEED, Auroc, auroc_ci

DICOM_TAGS = (
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "ViewPosition",
    "PhotometricInterpretation",
    "KVP",
    "PixelSpacing",
    "BitsStored",
    "Rows",
    "Columns",
)
MAX_GROUPS = 10  # a numeric attribute with more distinct values is binned (quartiles) for the groups
MIN_PER_CLASS_CI = 5  # a within-group AUROC gets a CI only with this many images of each class
MISSING = "(missing)"


def _tag_value(value: object) -> str | None:
    """Render a DICOM element value as text (multi-valued ones joined by ``x``); ``None`` if empty."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        return text.strip() or None
    try:
        parts = list(value)  # MultiValue (PixelSpacing)
    except TypeError:
        return str(value).strip() or None
    return "x".join(f"{float(p):g}" if isinstance(p, int | float) else str(p) for p in parts) or None


def dicom_tags(paths: Sequence[str | Path], tags: Sequence[str] = DICOM_TAGS) -> pd.DataFrame:
    """Read the acquisition tags of each DICOM file (header only, no pixels); ``None`` where absent.

    Args:
        paths: DICOM files (suffix-less ones too).
        tags: DICOM keywords to read.

    Returns:
        One row per path, in order, one column per tag.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    rows = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        rows.append({tag: _tag_value(ds.get(tag)) for tag in tags})
    return pd.DataFrame(rows, columns=list(tags))


@dataclass(frozen=True)
class Group:
    """One value (or bin) of an attribute: its images per class and the model's AUROC within it."""

    value: str
    n_normal: int
    n_abnormal: int
    auroc: Auroc | None  # None: the group lacks a class


@dataclass(frozen=True)
class AttributeAudit:
    """An attribute that varies: its AUROC alone (how it predicts the label) and the groups."""

    name: str
    source: str  # "DICOM" or the metadata CSV's name
    auroc: float
    numeric: bool
    groups: list[Group] = field(default_factory=list)


def _numeric(values: pd.Series) -> pd.Series | None:
    present = values[values != MISSING]
    number = pd.to_numeric(present, errors="coerce")
    return None if number.isna().any() or present.empty else number


def audit_attribute(
    name: str,
    values: pd.Series,
    labels: np.ndarray,
    scores: np.ndarray,
    source: str,
    draws: int = DRAWS,
    seed: int = SEED,
) -> AttributeAudit | None:
    """Audit one attribute (``None`` where it does not vary: nothing to learn from it).

    Args:
        name: The attribute's name (tag or column).
        values: One value per image (text; missing ones as ``None``).
        labels: 0 = normal, 1 = abnormal, per image.
        scores: The model's score per image.
        source: Where the attribute comes from, for the report.
        draws: Bootstrap draws of each within-group CI.
        seed: Bootstrap seed.

    Returns:
        The attribute's AUROC alone and its groups.
    """
    values = values.fillna(MISSING).astype(str).reset_index(drop=True)
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if values.nunique() < 2:
        return None
    number = _numeric(values)
    numeric = number is not None and values.nunique() > MAX_GROUPS and (values == MISSING).sum() == 0
    if numeric:
        value = auroc_ci(labels, number.to_numpy(dtype=np.float64), draws=0).value
        alone = max(value, 1.0 - value)
        bins = pd.qcut(number.rank(method="first"), 4, labels=False)
        edges = number.groupby(bins).agg(["min", "max"])
        keys = bins.map(lambda b: f"{edges.loc[b, 'min']:g}-{edges.loc[b, 'max']:g}")
    else:
        rate = pd.Series(labels).groupby(values).transform("mean").to_numpy()
        alone = auroc_ci(labels, rate, draws=0).value
        keys = values
    groups = []
    for key in sorted(keys.unique(), key=lambda k: (-int((keys == k).sum()), k)):
        inside = (keys == key).to_numpy()
        n_abnormal = int(labels[inside].sum())
        n_normal = int(inside.sum()) - n_abnormal
        auroc = None
        if n_normal and n_abnormal:
            ci = min(n_normal, n_abnormal) >= MIN_PER_CLASS_CI
            auroc = auroc_ci(labels[inside], scores[inside], draws if ci else 0, seed)
        groups.append(Group(str(key), n_normal, n_abnormal, auroc))
    return AttributeAudit(name, source, float(alone), bool(numeric), groups)


def audit_attributes(
    table: pd.DataFrame,
    labels: np.ndarray,
    scores: np.ndarray,
    source: str,
    draws: int = DRAWS,
    seed: int = SEED,
) -> list[AttributeAudit]:
    """:func:`audit_attribute` of every column of ``table`` that varies, in column order."""
    audits = (
        audit_attribute(str(column), table[column], labels, scores, source, draws, seed) for column in table
    )
    return [a for a in audits if a is not None]
