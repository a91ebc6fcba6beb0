"""Why does a score rank one class above another? Image statistics per class, and what the scores follow.

    python -m benchmarks.diagnose --root <XRayFolder root> --out benchmarks/results/diagnosis/adult_cxr.md \
        [--per-image <curves run>/per_image.csv] [--data anomalib_simsid.ZhangLab]

For every image of ``train/normal``, ``val`` and ``test`` (as the model sees it: read with the
package reader, grey, :func:`simsid_resize` to 128 px) it computes intensity and texture statistics:
mean, standard deviation, 5th/95th percentile, dark and bright fractions, mean gradient magnitude,
sharpness (mean absolute difference of neighbouring pixels), Laplacian variance (fine texture) and
grey-level entropy, all from :mod:`anomalib_simsid.audit.statistics` (the one definition the shortcut
audit, its statistic baselines and the matched metrics use). The report gives each statistic per class,
and the AUROC a statistic alone reaches (abnormal vs normal) on validation and test: a statistic far
from 0.5 is a shortcut a model can pick up, and its direction says which class is darker, smoother...

With ``--per-image`` (written by
:class:`~anomalib_simsid.models.simsid.adapters.score_curves.ScoreCurves`) it adds, for each
evaluated epoch, every score's Spearman correlation with each statistic on validation, and the mean
reconstruction residual per class: what the critic keys on, and how it changes with training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from anomalib_simsid.audit.statistics import AUDIT_SIZE, STATS, image_statistics, path_statistics
from benchmarks.common import instantiate

__all__ = ["MODEL_SIZE", "STATS", "folder_statistics", "image_statistics", "main", "path_statistics"]

MODEL_SIZE = AUDIT_SIZE  # the input size of every model in the suite's configs (SimSID's paper size)


def folder_statistics(
    root: str, size: int = MODEL_SIZE, data: str = "anomalib_simsid.XRayFolder"
) -> pd.DataFrame:
    """One row per image of a chest datamodule's splits: split, label, path and :func:`image_statistics`."""
    samples = instantiate({"class_path": data, "init_args": {"root": root}}).build_samples()
    frame = pd.DataFrame({
        "split": samples.split.to_numpy(),
        "label": samples.label_index.astype(int).to_numpy(),
        "image_path": samples.image_path.to_numpy(),
    })  # fmt: skip
    return pd.concat([frame, path_statistics(samples.image_path, size)], axis=1)


def statistics_table(stats: pd.DataFrame) -> str:
    """Markdown: each statistic's mean per group, and the AUROC it alone reaches on val and test."""
    groups = {
        "train normal": stats[stats.split == "train"],
        **{
            f"{split} {name}": stats[(stats.split == split) & (stats.label == label)]
            for split in ("val", "test")
            for label, name in ((0, "normal"), (1, "abnormal"))
        },
    }
    head = "| statistic | " + " | ".join(groups) + " | AUROC val | AUROC test |"
    lines = [head, "|" + "---|" * (len(groups) + 3)]
    for stat in STATS:
        means = [f"{group[stat].mean():.4g}" for group in groups.values()]
        aurocs = []
        for split in ("val", "test"):
            part = stats[stats.split == split]
            aurocs.append(f"{roc_auc_score(part.label, part[stat]):.3f}")
        lines.append(f"| {stat} | " + " | ".join(means + aurocs) + " |")
    return "\n".join(lines)


def score_table(per_image: pd.DataFrame, stats: pd.DataFrame, split: str = "val") -> str:
    """Markdown: per epoch and score, AUROC, Spearman correlation with each statistic, mean per class."""
    if "ground_truth" in per_image:  # ScoreCurves' per-image CSV: the predictions columns + one per score
        truth = per_image.ground_truth.map({"normal": 0, "anomalous": 1})
        per_image = per_image.drop(columns=["score", "label", "ground_truth", "overlay"]).assign(label=truth)
    merged = per_image[per_image.split == split].merge(stats[["image_path", *STATS]], on="image_path")
    scores = [c for c in per_image.columns if c not in {"epoch", "split", "image_path", "label"}]
    head = (
        "| epoch | score | AUROC | normal mean | abnormal mean | "
        + " | ".join(f"ρ {s}" for s in STATS)
        + " |"
    )
    lines = [head, "|" + "---|" * (len(STATS) + 5)]
    for epoch, part in merged.groupby("epoch"):
        for score in scores:
            rho = [f"{spearmanr(part[score], part[stat]).statistic:+.2f}" for stat in STATS]
            auroc = roc_auc_score(part.label, part[score])
            means = [f"{part[part.label == label][score].mean():.4g}" for label in (0, 1)]
            lines.append(f"| {epoch} | {score} | {auroc:.3f} | " + " | ".join(means + rho) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write the diagnosis report (markdown) and the per-image statistics (CSV beside it)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", required=True, help="dataset root, e.g. an XRayFolder: train/normal, val/*, test/*"
    )
    parser.add_argument(
        "--data", default="anomalib_simsid.XRayFolder", help="datamodule class with build_samples()"
    )
    parser.add_argument("--out", required=True, type=Path, help="markdown report to write")
    parser.add_argument("--per-image", type=Path, help="per_image.csv of a benchmarks.curves run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    stats = folder_statistics(args.root, data=args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stats.to_csv(args.out.with_suffix(".stats.csv"), index=False, float_format="%.6g")
    parts = [
        f"# Diagnosis: {Path(args.root).name}",
        "",
        f"Command: `python -m benchmarks.diagnose --data {args.data} --root <root> --out <this file>"
        + (" --per-image <run>/per_image.csv`" if args.per_image else "`"),
        "",
        "## Image statistics per class (128 px, as the model sees them)",
        "",
        "AUROC of a statistic alone, abnormal vs normal: above 0.5 means abnormal images have larger values.",
        "",
        statistics_table(stats),
    ]
    if args.per_image:
        per_image = pd.read_csv(args.per_image)
        parts += [
            "",
            "## Scores on validation: AUROC, class means and Spearman ρ with each statistic",
            "",
            score_table(per_image, stats),
        ]
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text("\n".join(parts) + "\n")
    tmp.replace(args.out)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
