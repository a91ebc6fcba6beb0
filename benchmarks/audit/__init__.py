"""A shortcut audit for every model: does its score follow the disease, or the acquisition.

    python -m benchmarks.audit --scores benchmarks/results/zhanglab/scores.csv.gz --root ZhangLab=<folder>

One global statistic of a chest X-ray (its sharpness, its mean intensity) can rank a test set as well
as a trained detector when the two classes come from different scanners or sizes. The audit scores
every row of a suite ``scores.csv`` without retraining: test AUROC with a bootstrap 95 % CI, the
AUROC on test pairs matched on sharpness and on mean intensity (where those statistics are at
chance), with CIs, and the Spearman correlation of the score with each statistic. It writes
``audit.md``, ``audit_<dataset>.png`` and the matched file lists ``matched_<dataset>_<statistic>.csv``
beside the scores (or into ``--out``). The suite runs it after every run.

The arithmetic, the statistics and the report live in the package (:mod:`anomalib_simsid.audit`, also
behind the installed ``simsid-audit`` command for any model's scores); this module is the suite's
front end (its ``scores.csv`` with several datasets, models and seeds) and ``baselines`` holds the
statistic "models" of the suite.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from anomalib_simsid.audit import (
    MATCH_STATISTICS,
    Auroc,
    Matched,
    auroc_ci,
    match_pairs,
    matched_auroc,
    matched_auroc_ci,
    write_audit,
)
from anomalib_simsid.audit.statistics import AUDIT_SIZE as MODEL_SIZE
from benchmarks.audit.baselines import BASELINE_STATISTICS, StatisticBaseline

__all__ = [
    "BASELINE_STATISTICS",
    "MATCH_STATISTICS",
    "Auroc",
    "Matched",
    "StatisticBaseline",
    "auroc_ci",
    "main",
    "match_pairs",
    "matched_auroc",
    "matched_auroc_ci",
    "write_audit",
]


def _roots(items: Sequence[str]) -> dict[str, str]:
    roots = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name:
            msg = f"--root: expected DATASET=PATH, got {item!r}"
            raise ValueError(msg)
        roots[name] = path
    return roots


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``audit.md``, the plot and the matched lists for a ``scores.csv``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.audit", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--scores", required=True, type=Path, help="scores.csv.gz (or .csv) written by benchmarks.suite"
    )
    parser.add_argument(
        "--root", action="append", default=[], metavar="DATASET=PATH", required=True,
        help="root of each dataset in the scores (the image paths are relative to it); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, help="folder for audit.md and the rest (default: beside --scores)"
    )
    parser.add_argument("--image-size", type=int, default=MODEL_SIZE, help="the models' input size (px)")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.audit " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    path = write_audit(args.scores, _roots(args.root), args.out, args.image_size, command=command)
    print(path.read_text(), flush=True)
    return 0
