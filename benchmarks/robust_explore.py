"""Summarise exploration runs of SimSID's options: plain and sharpness-matched AUROC, ρ with sharpness.

    python -m benchmarks.robust_explore --runs <dir with <config>_s<seed>/per_image.csv> \
        --out benchmarks/results/robust/zhanglab [--scores critic_recon,calibrated_residual]

Each run is a ``benchmarks.curves`` output folder named ``<config>_s<seed>``, or a suite job folder
of a model with ``curves: true`` (``<dataset>-<model>-seed<seed>``). For every evaluated
epoch, split and score it gives the AUROC on all images, the AUROC on normal/abnormal pairs matched
on sharpness, and Spearman ρ of the score with sharpness, all from :mod:`benchmarks.audit` (the same
statistic, matching and caliper as the suite's audit). Choose on validation; test is recorded, never
used. Writes ``<out>.csv`` (every row), ``<out>.md`` (each score at the epoch of its best validation
AUROC per run, then a table per epoch, mean over seeds) and ``<out>_curves.csv`` (AUROC per epoch,
mean over seeds, for ``benchmarks.plot_curves``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from anomalib_simsid.audit.core import image_table, read_per_image
from benchmarks.audit import matched_auroc

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
        named = re.fullmatch(r"(.+)_s(\d+)", run.name) or re.fullmatch(r"(.+)-seed(\d+)", run.name)
        if named is None:
            msg = f"{run}: expected a folder named <config>_s<seed> or <name>-seed<seed>"
            raise ValueError(msg)
        config, seed = named.groups()
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


def select_on_validation(rows: pd.DataFrame) -> pd.DataFrame:
    """Per run and score, the epoch of the best validation AUROC (earliest on ties), both splits there."""
    wide = rows.pivot_table(
        index=["config", "score", "seed", "epoch"],
        columns="split",
        values=["auroc", "matched_auroc", "rho_sharpness", "wall_s"],
    )
    wide.columns = [f"{split}_{metric}" for metric, split in wide.columns]
    wide = wide.reset_index().sort_values(["config", "score", "seed", "epoch"])
    best = wide.loc[wide.groupby(["config", "score", "seed"]).val_auroc.idxmax()]
    return best.rename(columns={"test_wall_s": "wall_s"}).drop(columns="val_wall_s").reset_index(drop=True)


def selected_table(selected: pd.DataFrame) -> str:
    """Markdown: each score at its validation-chosen epoch, mean over seeds (range in brackets)."""
    metrics = [
        ("val_auroc", "val AUROC"),
        ("val_matched_auroc", "val matched"),
        ("test_auroc", "test AUROC"),
        ("test_matched_auroc", "test matched"),
        ("test_rho_sharpness", "test ρ sharp"),
    ]
    head = ["config", "score", "seeds", "epochs chosen", *(label for _, label in metrics), "fit to epoch (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (config, score), part in selected.groupby(["config", "score"]):

        def cell(column: str, values: pd.DataFrame = part, digits: int = 3) -> str:
            v = values[column].to_numpy()
            mean = f"{v.mean():.{digits}f}"
            return mean + (f" ({v.min():.{digits}f}-{v.max():.{digits}f})" if len(v) > 1 else "")

        cells = [config, score, ",".join(map(str, part.seed)), ",".join(map(str, part.epoch))]
        cells += [cell(column) for column, _ in metrics] + [cell("wall_s", digits=0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """AUROC per config, epoch, split and score, mean over seeds (the ``ScoreCurves`` CSV columns)."""
    return rows.groupby(["config", "epoch", "score", "split"], as_index=False).agg(
        auroc=("auroc", "mean"), seeds=("seed", "nunique"), wall_s=("wall_s", "mean")
    )


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
    mean_curves(rows).to_csv(
        args.out.with_name(args.out.name + "_curves.csv"), index=False, float_format="%.4f"
    )
    parts = ["### Each score at its best validation epoch\n\n" + selected_table(select_on_validation(rows))]
    parts += [f"### Epoch {epoch}\n\n{table(rows, epoch)}" for epoch in sorted(rows.epoch.unique())]
    text = "\n\n".join(parts)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
