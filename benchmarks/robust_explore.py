"""Summarise issue-26 exploration runs: plain and sharpness-matched AUROC, and ρ with sharpness.

    python -m benchmarks.robust_explore --runs <dir with <config>_s<seed>/per_image.csv> \
        --out benchmarks/results/robust/zhanglab [--scores critic_recon,calibrated_residual]

Each run is a ``benchmarks.curves`` output folder named ``<config>_s<seed>``. For every evaluated
epoch, split and score it gives the AUROC on all images, the AUROC on normal/abnormal pairs matched
on sharpness (mean absolute gradient of the 128-px grey image, as in ``benchmarks.diagnose``;
greedy nearest neighbour, normals in path order, without replacement, caliper 0.1 SD of the split),
and Spearman ρ of the score with sharpness. Choose on validation; test is recorded, never used.
Writes ``<out>.csv`` (every row) and ``<out>.md`` (a table per epoch, mean over seeds).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from anomalib_simsid.data import read_image
from anomalib_simsid.models.simsid.pre_processing import simsid_resize
from benchmarks.diagnose import image_statistics

SCORES = ("critic_recon", "critic_input", "residual_mean", "lowpass_residual", "calibrated_residual")
CALIPER_SD = 0.1


def sharpness(paths: list[str], size: int = 128) -> dict[str, float]:
    """Mean gradient magnitude of each image as the diagnosis computes it (grey, resized, [0, 1])."""
    resize = simsid_resize((size, size))
    return {
        p: image_statistics(resize(read_image(p)).mean(dim=0, keepdim=True).clamp(0, 1))["gradient"]
        for p in paths
    }


def matched_pairs(frame: pd.DataFrame, column: str = "sharpness") -> pd.DataFrame:
    """Normal/abnormal pairs equal in ``column``: greedy, normals in path order, caliper 0.1 SD."""
    caliper = CALIPER_SD * frame[column].std()
    normals = frame[frame.label == 0].sort_values("image_path")
    abnormal = frame[frame.label == 1].sort_values("image_path")
    free = dict(zip(abnormal.image_path, abnormal[column], strict=True))
    chosen = []
    for path, value in zip(normals.image_path, normals[column], strict=True):
        if not free:
            break
        best = min(free, key=lambda p: (abs(free[p] - value), p))
        if abs(free[best] - value) <= caliper:
            chosen += [path, best]
            del free[best]
    return frame[frame.image_path.isin(chosen)]


def summarise(runs: Path, scores: tuple[str, ...], cache: Path | None = None) -> pd.DataFrame:
    """One row per run, epoch, split and score; image sharpness read from / written to ``cache``."""
    frames = {
        d.name: pd.read_csv(d / "per_image.csv")
        for d in sorted(runs.iterdir())
        if (d / "per_image.csv").is_file()
    }
    paths = sorted({p for f in frames.values() for p in f.image_path})
    known = (
        pd.read_csv(cache)
        if cache is not None and cache.is_file()
        else pd.DataFrame(columns=["path", "sharpness"])
    )
    sharp = dict(zip(known.path, known.sharpness, strict=True))
    sharp |= sharpness([p for p in paths if p not in sharp])
    if cache is not None:
        pd.DataFrame({"path": list(sharp), "sharpness": list(sharp.values())}).to_csv(cache, index=False)
    rows = []
    for name, frame in frames.items():
        config, seed = re.fullmatch(r"(.+)_s(\d+)", name).groups()
        curves = pd.read_csv(runs / name / "curves.csv")
        frame = frame.assign(sharpness=frame.image_path.map(sharp))
        for (epoch, split), part in frame.groupby(["epoch", "split"]):
            matched = matched_pairs(part)
            wall = curves[(curves.epoch == epoch)].wall_s.max()
            for score in scores:
                if score not in part:
                    continue
                rows.append(
                    {
                        "config": config,
                        "seed": int(seed),
                        "epoch": int(epoch),
                        "split": split,
                        "score": score,
                        "auroc": roc_auc_score(part.label, part[score]),
                        "matched_auroc": roc_auc_score(matched.label, matched[score]),
                        "matched_pairs": len(matched) // 2,
                        "rho_sharpness": spearmanr(part[score], part.sharpness).statistic,
                        "wall_s": wall,
                    }
                )
    return pd.DataFrame(rows)


def table(rows: pd.DataFrame, epoch: int) -> str:
    """Markdown: every run at ``epoch``, mean (and range) over seeds, validation then test."""
    last = rows[rows.epoch == epoch]
    wide = last.pivot_table(
        index=["config", "score", "seed"], columns="split", values=["auroc", "matched_auroc", "rho_sharpness"]
    )
    head = ["val AUROC", "val matched", "val ρ sharp", "test AUROC", "test matched", "test ρ sharp"]
    lines = ["| config | score | seeds | " + " | ".join(head) + " |", "|---|---|---|" + "---|" * len(head)]
    for (config, score), part in wide.groupby(level=[0, 1]):
        seeds = part.index.get_level_values(2)

        def cell(metric: str, split: str, values: pd.DataFrame = part) -> str:
            v = values[(metric, split)].to_numpy()
            return f"{v.mean():.3f}" + (f" ({v.min():.3f}-{v.max():.3f})" if len(v) > 1 else "")

        lines.append(
            f"| {config} | {score} | {','.join(map(str, seeds))} | "
            + " | ".join(
                cell(m, s) for s in ("val", "test") for m in ("auroc", "matched_auroc", "rho_sharpness")
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write the CSV of every row and the markdown table of the last epochs."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output stem: <out>.csv and <out>.md")
    parser.add_argument("--scores", default=",".join(SCORES))
    parser.add_argument("--cache", type=Path, help="CSV of image sharpness, read if present, then rewritten")
    args = parser.parse_args(argv)
    rows = summarise(args.runs, tuple(args.scores.split(",")), args.cache)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(args.out.with_suffix(".csv"), index=False, float_format="%.4f")
    text = "\n\n".join(f"### Epoch {epoch}\n\n{table(rows, epoch)}" for epoch in sorted(rows.epoch.unique()))
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
