"""Summarise exploration runs of SimSID's options: plain and sharpness-matched AUROC, ρ with sharpness.

    python -m benchmarks.robust_explore --runs <dir with <config>_s<seed>/per_image.csv> \
        --out benchmarks/results/robust/zhanglab [--scores critic_recon,calibrated_residual]

Each run is a ``benchmarks.curves`` output folder named ``<config>_s<seed>``. For every evaluated
epoch, split and score it gives the AUROC on all images, the AUROC on normal/abnormal pairs matched
on sharpness, and Spearman ρ of the score with sharpness, all from :mod:`benchmarks.audit` (the same
statistic, matching and caliper as the suite's audit). Choose on validation; test is recorded, never
used. Writes ``<out>.csv`` (every row) and ``<out>.md`` (a table per epoch, mean over seeds).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from benchmarks.audit import matched_auroc
from benchmarks.audit.core import image_table, read_per_image

SCORES = ("critic_recon", "critic_input", "residual_mean", "lowpass_residual", "calibrated_residual")


def _row(part: pd.DataFrame, score: str) -> dict[str, float]:
    """AUROC, sharpness-matched AUROC (no interval) and ρ with sharpness of one epoch, split and score."""
    table = read_per_image(part, score)
    sharpness = image_table(table, None).set_index("image").sharpness.loc[table.image].to_numpy()
    matched = matched_auroc(table, statistic="sharpness", draws=0)
    return {
        "auroc": roc_auc_score(table.label, table.score),
        "matched_auroc": matched.auroc.value,
        "matched_pairs": matched.auroc.n,
        "rho_sharpness": spearmanr(table.score, sharpness).statistic,
    }


def summarise(runs: Path, scores: tuple[str, ...]) -> pd.DataFrame:
    """One row per run, epoch, split and score."""
    rows = []
    for run in sorted(d for d in runs.iterdir() if (d / "per_image.csv").is_file()):
        config, seed = re.fullmatch(r"(.+)_s(\d+)", run.name).groups()
        frame, curves = pd.read_csv(run / "per_image.csv"), pd.read_csv(run / "curves.csv")
        for (epoch, split), part in frame.groupby(["epoch", "split"]):
            wall = curves[curves.epoch == epoch].wall_s.max()
            for score in (s for s in scores if s in part):
                key = {
                    "config": config,
                    "seed": int(seed),
                    "epoch": int(epoch),
                    "split": split,
                    "score": score,
                }
                rows.append(key | _row(part, score) | {"wall_s": wall})
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
    args = parser.parse_args(argv)
    rows = summarise(args.runs, tuple(args.scores.split(",")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(args.out.with_suffix(".csv"), index=False, float_format="%.4f")
    text = "\n\n".join(f"### Epoch {epoch}\n\n{table(rows, epoch)}" for epoch in sorted(rows.epoch.unique()))
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
