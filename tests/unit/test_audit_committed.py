"""The package audit reproduces the committed audit tables (benchmarks/results/*/audit.md) exactly.

From committed files only: the suite's scores (scores.csv.gz) and matched pairs (matched_*.csv) give
every model row's test AUROC, matched AUROCs and their bootstrap CIs, cell for cell. With the real
images beside the checkout (``realdata``), the whole audit.md and the pair lists are rebuilt from the
images as well.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from anomalib_simsid.audit.core import MATCH_STATISTICS, read_per_image
from anomalib_simsid.audit.matching import auroc_ci, matched_auroc_ci
from anomalib_simsid.audit.report import _ci, _pct

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
SETS = {"zhanglab": "ZhangLab", "adult_cxr": "adult-cxr-dev"}
ROOTS = {"zhanglab": "zhanglab-224", "adult_cxr": "adult-cxr-dev"}


def _committed_rows(folder: Path) -> pd.DataFrame:
    """The model rows of a committed audit.md's first table (statistic baselines excluded)."""
    lines = (folder / "audit.md").read_text().splitlines()
    start = lines.index("### Models") + 2
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    header = [f"{h} {i}" if h == "95% CI" else h for i, h in enumerate(header)]
    return pd.DataFrame(rows, columns=header)


@pytest.mark.parametrize("folder", list(SETS))
def test_committed_model_rows_are_reproduced_from_committed_scores_and_pairs(folder):
    scores = pd.read_csv(RESULTS / folder / "scores.csv.gz")
    scores = scores.assign(name=scores["entry"].fillna(scores.model))
    pairs = {s: pd.read_csv(RESULTS / folder / f"matched_{SETS[folder]}_{s}.csv") for s in MATCH_STATISTICS}
    rows = _committed_rows(RESULTS / folder)
    assert len(rows) >= 6
    for _, row in rows.iterrows():
        part = read_per_image(scores[(scores.name == row.model) & (scores.seed == int(row.seed))])
        test = auroc_ci(part.label, part.score)
        cells = [_pct(test.value), _ci(test)]
        score = dict(zip(part.image, part.score, strict=True))
        for statistic in MATCH_STATISTICS:
            normal = [score[i] for i in pairs[statistic].normal]
            abnormal = [score[i] for i in pairs[statistic].abnormal]
            matched = matched_auroc_ci(normal, abnormal)
            cells += [_pct(matched.value), _ci(matched)]
        assert cells == list(row.iloc[2:8]), f"{folder}: {row.model} seed {row.seed}"


def _data_root(folder: str) -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "data" / ROOTS[folder]


@pytest.mark.realdata
@pytest.mark.parametrize("folder", ["zhanglab"])
def test_whole_committed_audit_is_rebuilt_from_the_images(folder, tmp_path):
    root = _data_root(folder)
    if not root.is_dir():
        pytest.skip(f"real data not available at {root}")
    from anomalib_simsid.audit.report import write_audit

    path = write_audit(RESULTS / folder / "scores.csv.gz", {SETS[folder]: root}, tmp_path, 128)
    committed = (RESULTS / folder / "audit.md").read_text().splitlines()
    rebuilt = path.read_text().splitlines()
    assert [x for x in rebuilt if not x.startswith("Command:")] == [
        x for x in committed if not x.startswith("Command:")
    ]
    for statistic in MATCH_STATISTICS:
        name = f"matched_{SETS[folder]}_{statistic}.csv"
        assert (tmp_path / name).read_bytes() == (RESULTS / folder / name).read_bytes()
