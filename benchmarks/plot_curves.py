"""Plot a learning-curve CSV (``benchmarks.curves`` / ``ScoreCurves``): AUROC per score against epochs.

    python -m benchmarks.plot_curves benchmarks/results/curves/adult_cxr.csv \
        [--baseline PaDiM=76.8 --baseline PatchCore=76.7] [--title "adult-cxr-dev, paper model"]

Writes ``<csv stem>.png`` beside the CSV: one panel per split (validation, test), one line per
score, the paper's score drawn thick, chance at 0.5, and baselines as dotted lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

PAPER_SCORE = "critic_recon"


def plot_curves(csv: Path, baselines: dict[str, float], title: str = "") -> Path:
    """Draw the curves of ``csv`` into ``csv.with_suffix('.png')`` and return that path."""
    curves = pd.read_csv(csv)
    splits = [s for s in ("val", "test") if s in set(curves.split)]
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.2), sharey=True, squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        part = curves[curves.split == split]
        for score, rows in part.groupby("score"):
            rows = rows.sort_values("epoch")
            ax.plot(
                rows.epoch, rows.auroc, marker="o", ms=3, lw=2.8 if score == PAPER_SCORE else 1.2, label=score
            )
        ax.axhline(0.5, color="grey", lw=0.8)
        for name, value in baselines.items():
            ax.axhline(value / 100 if value > 1 else value, ls=":", color="black", lw=1)
            ax.annotate(
                name, (part.epoch.min(), value / 100 if value > 1 else value), fontsize=8, va="bottom"
            )
        ax.set_title(f"{'validation' if split == 'val' else 'test'} AUROC")
        ax.set_xlabel("epochs trained")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("image AUROC")
    # Outside the axes: inside, no corner stays free of curves for long runs.
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = csv.with_suffix(".png")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and plot."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csv", type=Path)
    parser.add_argument("--baseline", action="append", default=[], help="NAME=AUROC (percent or fraction)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    baselines = {}
    for item in args.baseline:
        name, _, value = item.partition("=")
        if not value:
            parser.error(f"--baseline expects NAME=AUROC, got {item!r}")
        baselines[name] = float(value)
    print(plot_curves(args.csv, baselines, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
