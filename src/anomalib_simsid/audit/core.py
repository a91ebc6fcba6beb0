"""The shortcut audit of per-image scores: statistics of each image, matched pairs, AUROC with CIs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from anomalib_simsid.audit.matching import (
    CALIPER_SD,
    DRAWS,
    MIN_PAIRS,
    SEED,
    Auroc,
    auroc_ci,
    match_pairs,
    matched_auroc_ci,
)
from anomalib_simsid.audit.statistics import AUDIT_SIZE, BASELINE_STATISTICS, label, path_statistics

MATCH_STATISTICS = ("sharpness", "mean")  # the audit's matched subsets: acquisition, exposure
PATH_COLUMNS = ("image", "image_path")  # the suite's scores.csv, ScoreCurves' per_image.csv


def read_per_image(per_image: pd.DataFrame | str | Path, score: str = "score") -> pd.DataFrame:
    """Columns ``image``, ``label``, ``score`` of a per-image table (a frame or a CSV file), checked.

    The path column is ``image`` (relative to the dataset root, as the suite writes) or ``image_path``.
    """
    where = str(per_image) if isinstance(per_image, str | Path) else "per-image table"
    frame = pd.read_csv(per_image) if isinstance(per_image, str | Path) else per_image
    if "ground_truth" in frame:  # the predictions columns (predict, simsid-score, ScoreCurves' per-image)
        frame = frame.assign(label=frame.ground_truth.map({"normal": 0, "anomalous": 1}))
    path_column = next((c for c in PATH_COLUMNS if c in frame), None)
    missing = [c for c in ("label", score) if c not in frame] + (
        [] if path_column else ["image or image_path"]
    )
    if missing:
        msg = f"{where}: missing column(s) {missing}; expected an image path, label (0/1) and {score!r}"
        raise ValueError(msg)
    out = pd.DataFrame({
        "image": frame[path_column].astype(str).to_numpy(),
        "label": frame["label"].to_numpy(),
        "score": pd.to_numeric(frame[score], errors="coerce").to_numpy(dtype=np.float64),
    })  # fmt: skip
    if not out.label.isin([0, 1]).all() or not np.isfinite(out.score).all():
        msg = f"{where}: labels must be 0/1 and {score!r} finite numbers"
        raise ValueError(msg)
    out["label"] = out.label.astype(int)
    return out


def resolve(images: Sequence[str], root: str | Path | None, where: str = "scores") -> list[Path]:
    """Absolute files of ``images`` (relative ones under ``root``); one error lists the missing ones."""
    paths = [Path(i) if Path(i).is_absolute() or root is None else Path(root) / i for i in images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        msg = (
            f"{where}: {len(missing)} image(s) not found (root {root}), e.g. {missing[:3]}; expected "
            "paths relative to the dataset root, as the suite writes them in scores.csv"
        )
        raise FileNotFoundError(msg)
    return paths


def image_table(
    per_image: pd.DataFrame, root: str | Path | None, image_size: int = AUDIT_SIZE, where: str = "scores"
) -> pd.DataFrame:
    """One row per distinct image (sorted by path, so matching is deterministic): label and statistics."""
    images = per_image.drop_duplicates("image").sort_values("image", kind="stable")[["image", "label"]]
    if per_image.groupby("image").label.nunique().max() > 1:
        msg = f"{where}: an image has two labels"
        raise ValueError(msg)
    stats = path_statistics(resolve(list(images.image), root, where), image_size)
    return pd.concat([images.reset_index(drop=True), stats], axis=1)


def pairs_table(images: pd.DataFrame, statistic: str, caliper_sd: float = CALIPER_SD) -> pd.DataFrame:
    """Match normal/abnormal pairs on ``statistic`` (:func:`match_pairs`); names and values."""
    index = match_pairs(images[statistic].to_numpy(), images.label.to_numpy(), caliper_sd)
    normal, abnormal = images.iloc[index[:, 0]], images.iloc[index[:, 1]]
    return pd.DataFrame({
        "pair": np.arange(len(index)),
        "normal": normal.image.to_numpy(),
        "abnormal": abnormal.image.to_numpy(),
        f"normal_{statistic}": normal[statistic].to_numpy(),
        f"abnormal_{statistic}": abnormal[statistic].to_numpy(),
    })  # fmt: skip


def _pair_scores(per_image: pd.DataFrame, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores of each pair's normal and abnormal image, or ``None`` where a matched image was not scored."""
    score = dict(zip(per_image.image, per_image.score, strict=True))
    if not set(pairs.normal).union(pairs.abnormal) <= score.keys():
        return None
    return np.array([score[i] for i in pairs.normal]), np.array([score[i] for i in pairs.abnormal])


@dataclass(frozen=True)
class Matched:
    """AUROC on images matched on one statistic, with the pairs it was computed on."""

    statistic: str
    auroc: Auroc
    pairs: pd.DataFrame


def matched_auroc(
    per_image: pd.DataFrame | str | Path,
    root: str | Path | None = None,
    statistic: str = "sharpness",
    score: str = "score",
    caliper_sd: float = CALIPER_SD,
    image_size: int = AUDIT_SIZE,
    draws: int = DRAWS,
    seed: int = SEED,
) -> Matched:
    """AUROC of ``score`` on normal/abnormal pairs of equal ``statistic`` (e.g. on validation).

    ``per_image``: a frame or CSV with an image path (``image`` relative to ``root``, or ``image_path``),
    ``label`` (1 = abnormal) and the ``score`` column (higher = abnormal); one row per image, so filter
    a multi-epoch or multi-split table first. Pairs come from :func:`match_pairs` on the images' own
    statistics (read and resized as the models see them; cached per file, so calling this once per
    epoch reads each image once). ``draws=0`` skips the bootstrap interval.
    """
    table = read_per_image(per_image, score)
    if table.image.duplicated().any():
        msg = "per-image table: an image appears twice (filter to one epoch and one split first)"
        raise ValueError(msg)
    pairs = pairs_table(image_table(table, root, image_size), statistic, caliper_sd)
    normal, abnormal = _pair_scores(table, pairs)
    return Matched(statistic, matched_auroc_ci(normal, abnormal, draws, seed), pairs)


def audit_rows(
    scores: pd.DataFrame,
    images: pd.DataFrame,
    pairs: dict[str, pd.DataFrame],
    draws: int = DRAWS,
    seed: int = SEED,
    min_pairs: int = MIN_PAIRS,
) -> pd.DataFrame:
    """One row per (entry, seed) of a dataset's scores: test AUROC, matched AUROCs (all with CIs), ρ.

    A matched subset of fewer than ``min_pairs`` pairs gives no AUROC (``nan``, ``n`` = its pairs).
    """
    name = scores["entry"].fillna(scores.model) if "entry" in scores else scores.model
    scores = scores.assign(name=name)
    rows = []
    for (entry, seed_), part in scores.groupby(["name", "seed"], sort=False):
        part = read_per_image(part).sort_values("image", kind="stable")
        if part.image.duplicated().any():
            msg = f"scores: {entry} seed {seed_} scores an image twice"
            raise ValueError(msg)
        row = {
            "model": entry,
            "seed": int(seed_),
            "n": len(part),
            "test": auroc_ci(part.label, part.score, draws, seed),
        }
        for statistic, matched in pairs.items():
            got = _pair_scores(part, matched)
            if got and len(matched) >= min_pairs:
                row[statistic] = matched_auroc_ci(*got, draws, seed)
            else:
                row[statistic] = Auroc(np.nan, np.nan, np.nan, len(matched) if got else 0)
        stats = images.set_index("image").loc[part.image]
        for statistic in BASELINE_STATISTICS:
            row[f"rho {label(statistic)}"] = float(spearmanr(part.score, stats[statistic]).statistic)
        rows.append(row)
    return pd.DataFrame(rows)
