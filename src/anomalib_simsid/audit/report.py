"""``audit.md``, the AUROC plot (all images against matched, with CIs) and the matched file lists."""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from anomalib_simsid.audit.core import MATCH_STATISTICS, audit_rows, image_table, pairs_table, read_per_image
from anomalib_simsid.audit.matching import CALIPER_SD, DRAWS, SEED, Auroc
from anomalib_simsid.audit.statistics import AUDIT_SIZE, BASELINE_STATISTICS, label

PREFIX = "stat: "  # rows of statistic baselines are named "stat: <label>"
COLUMN = {"sharpness": "sharpness-matched AUROC", "mean": "intensity-matched AUROC"}
RHOS = [f"rho {label(s)}" for s in BASELINE_STATISTICS]


def safe_name(name: str) -> str:
    """``name`` with everything but letters, digits, ``_.-`` replaced, for file names."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it, so no reader sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` atomically; a ``.gz`` path is gzipped without a timestamp (same text, same bytes)."""
    data = text.encode()
    write_bytes_atomic(path, gzip.compress(data, mtime=0) if Path(path).suffix == ".gz" else data)


def is_statistic_entry(name: str) -> bool:
    """Whether a result row (model or entry name) is a statistic baseline's."""
    return str(name).startswith(PREFIX)


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.1f}"


def _ci(auroc: Auroc) -> str:
    return "n/a" if not np.isfinite(auroc.low) else f"{_pct(auroc.low)}-{_pct(auroc.high)}"


def audit_table(rows: pd.DataFrame) -> str:
    """Markdown: one line per row of :func:`audit_rows` (AUROC in %, 95 % CIs, Spearman ρ)."""
    head = ["model", "seed", "test AUROC", "95% CI"]
    for statistic in MATCH_STATISTICS:
        head += [COLUMN[statistic], "95% CI"]
    lines = ["| " + " | ".join(head + RHOS) + " |", "|" + "---|" * (len(head) + len(RHOS))]
    for _, row in rows.iterrows():
        cells = [str(row.model), str(row.seed), _pct(row.test.value), _ci(row.test)]
        for statistic in MATCH_STATISTICS:
            cells += [_pct(row[statistic].value), _ci(row[statistic])]
        cells += [f"{row[rho]:+.2f}" for rho in RHOS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_labels(rows: pd.DataFrame) -> list[str]:
    """Plot labels: the model, with its seed only where the rows hold more than one seed."""
    several = rows.seed.nunique() > 1
    return [f"{r.model} (seed {r.seed})" if several else str(r.model) for r in rows.itertuples()]


def plot_audit(rows: pd.DataFrame, dataset: str, path: Path) -> None:
    """One line per row: test AUROC on all images and on each matched subset, with 95 % CIs."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    labels = row_labels(rows)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.42 * len(rows)))
    y = np.arange(len(rows))[::-1].astype(float)
    series = [("test", "all test images", "black")] + [
        (s, COLUMN[s].replace(" AUROC", ""), c)
        for s, c in zip(MATCH_STATISTICS, ("tab:red", "tab:blue"), strict=True)
    ]
    for k, (column, name, color) in enumerate(series):
        values = rows[column].tolist()
        centre = np.array([100 * a.value for a in values])
        error = np.array([[100 * (a.value - a.low), 100 * (a.high - a.value)] for a in values]).T
        offset = y + 0.22 * (1 - k)
        ax.errorbar(
            centre, offset, xerr=np.nan_to_num(error), fmt="o", ms=4, color=color, capsize=2, label=name
        )
    models = [not is_statistic_entry(m) for m in rows.model]
    if any(models) and not all(models):  # a line between the models and the statistic baselines
        ax.axhline(y[sum(models) - 1] - 0.5, color="grey", lw=0.8)
    ax.axvline(50, color="grey", ls=":", lw=1)
    ax.set_yticks(y, labels, fontsize=8)
    low = min(
        (100 * a.low for column, _, _ in series for a in rows[column] if np.isfinite(a.low)), default=40
    )
    ax.set(xlabel="AUROC (%), 95% bootstrap CI", xlim=(min(40, 10 * np.floor(low / 10)), 100))
    ax.set_title(f"{dataset}: AUROC on all test images and on matched pairs", fontsize=10, pad=22)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def audit_dataset(
    scores: pd.DataFrame,
    dataset: str,
    root: str | Path,
    out: Path,
    image_size: int = AUDIT_SIZE,
    caliper_sd: float = CALIPER_SD,
    draws: int = DRAWS,
    seed: int = SEED,
) -> list[str]:
    """Audit one dataset's rows; write its matched lists and plot into ``out``; return its markdown."""
    table = read_per_image(scores)
    images = image_table(table, root, image_size, where=f"scores of {dataset}")
    pairs = {s: pairs_table(images, s, caliper_sd) for s in MATCH_STATISTICS}
    for statistic, matched in pairs.items():
        name = f"matched_{safe_name(dataset)}_{statistic}.csv"
        write_text_atomic(out / name, matched.to_csv(index=False, float_format="%.6g"))
    rows = audit_rows(scores, images, pairs, draws, seed)
    statistic_rows = rows.model.map(is_statistic_entry)
    rows = pd.concat([rows[~statistic_rows], rows[statistic_rows]], ignore_index=True)
    plot = f"audit_{safe_name(dataset)}.png"
    plot_audit(rows, dataset, out / plot)
    n_normal, n_abnormal = int((images.label == 0).sum()), int((images.label == 1).sum())
    sd = images[list(MATCH_STATISTICS)].std(ddof=1)
    matched = "; ".join(
        f"{label(s)}: {len(p)} pairs (caliper {caliper_sd} SD = {caliper_sd * sd[s]:.4g}), "
        f"`matched_{safe_name(dataset)}_{s}.csv`"
        for s, p in pairs.items()
    )
    lines = [
        f"## {dataset}",
        "",
        f"* Test images: {n_normal} normal + {n_abnormal} abnormal; statistics at {image_size} px (grey, "
        "bicubic, as the models see them).",
        "* Matched subsets (greedy nearest-neighbour matching without replacement, closest pairs first, "
        f"within the caliper): {matched}.",
        "",
    ]
    if (~statistic_rows).any():
        lines += ["### Models", "", audit_table(rows[~rows.model.map(is_statistic_entry)]), ""]
    if statistic_rows.any():
        lines += [
            "### Statistic baselines (no training: one global statistic of the image, sign chosen on "
            "validation)",
            "",
            audit_table(rows[rows.model.map(is_statistic_entry)]),
            "",
        ]
    return [*lines, f"![audit]({plot})", ""]


def write_audit(
    scores_csv: str | Path,
    roots: Mapping[str, str | Path],
    out: str | Path | None = None,
    image_size: int = AUDIT_SIZE,
    caliper_sd: float = CALIPER_SD,
    draws: int = DRAWS,
    seed: int = SEED,
    command: str = "",
) -> Path:
    """Audit every dataset of a suite ``scores.csv`` (``roots``: dataset name -> root); write ``audit.md``."""
    scores_csv = Path(scores_csv)
    out = Path(out) if out is not None else scores_csv.parent
    out.mkdir(parents=True, exist_ok=True)
    scores = pd.read_csv(scores_csv)
    for column in ("dataset", "model", "seed"):
        if column not in scores:
            msg = (
                f"{scores_csv}: missing column {column!r}; expected a scores.csv written by benchmarks.suite"
            )
            raise ValueError(msg)
    missing = sorted(set(scores.dataset) - set(roots))
    if missing:
        msg = f"{scores_csv}: no dataset root given for {missing} (--root DATASET=PATH)"
        raise ValueError(msg)
    lines = [
        "# Shortcut audit",
        "",
        f"Command: `{command or 'python -m benchmarks.audit --scores ' + str(scores_csv)}`",
        "",
        "Does a score follow the disease or the acquisition? AUROC in %, on all test images and on "
        "subsets of normal/abnormal pairs of equal sharpness (mean absolute difference of neighbouring "
        "pixels) or equal mean intensity, on which those statistics are at chance. 95% CI: percentile "
        f"bootstrap, {draws:,} draws, seed {seed} (all images: resampled within each class; matched: pairs "
        "resampled), the same draws for every row. rho: Spearman correlation of the score with each "
        "statistic on all test images.",
        "",
    ]
    for dataset, part in scores.groupby("dataset", sort=False):
        lines += audit_dataset(part, str(dataset), roots[dataset], out, image_size, caliper_sd, draws, seed)
    path = out / "audit.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def _auroc_json(auroc: Auroc | None) -> dict[str, float | int | None] | None:
    if auroc is None:
        return None
    number = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731 (JSON has no NaN)
    return {"auroc": number(auroc.value), "low": number(auroc.low), "high": number(auroc.high), "n": auroc.n}


def metadata_section(audits: list, title: str) -> list[str]:
    """Markdown for :class:`~anomalib_simsid.audit.metadata.AttributeAudit` s: the attribute alone, groups."""
    lines = [
        f"### {title}",
        "",
        "AUROC of the attribute alone: how well acquisition predicts the label (0.5: not at all). Within "
        "each group holding both classes, the model's AUROC with a 95% CI (n/a: fewer than 5 images of "
        "a class).",
        "",
        "| attribute | AUROC alone | group | normal | abnormal | model AUROC in group | 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for audit in audits:
        for k, group in enumerate(audit.groups):
            head = [audit.name, _pct(audit.auroc)] if k == 0 else ["", ""]
            model = (
                ["(one class)", ""] if group.auroc is None else [_pct(group.auroc.value), _ci(group.auroc)]
            )
            cells = [*head, group.value, str(group.n_normal), str(group.n_abnormal), *model]
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def user_report(
    name: str,
    rows: pd.DataFrame,
    images: pd.DataFrame,
    pairs: Mapping[str, pd.DataFrame],
    metadata: list,
    notes: list[str],
    settings: Mapping[str, object],
) -> tuple[str, dict]:
    """Compose the ``simsid-audit`` report of one model's scores: markdown, and the figures as JSON.

    Args:
        name: The model's name in the tables.
        rows: :func:`~anomalib_simsid.audit.core.audit_rows` of the model and the statistic baselines.
        images: One row per audited image: ``image``, ``label`` and the statistics.
        pairs: The matched pairs per statistic.
        metadata: Attribute audits (DICOM tags, the user's metadata columns).
        notes: Lines the user must read (too few pairs, tags absent...).
        settings: Command, image size, caliper, draws, seed, min_pairs.

    Returns:
        The markdown text and a JSON-ready dict.
    """
    n_normal, n_abnormal = int((images.label == 0).sum()), int((images.label == 1).sum())
    caliper, draws, seed = settings["caliper_sd"], settings["draws"], settings["seed"]
    sd = images[list(pairs)].std(ddof=1)
    matched = "; ".join(
        f"{label(s)}: {len(p)} pairs (caliper {caliper} SD = {caliper * sd[s]:.4g}), `matched_{s}.csv`"
        for s, p in pairs.items()
    )
    models = rows[~rows.model.map(is_statistic_entry)]
    statistics = rows[rows.model.map(is_statistic_entry)]
    lines = [
        f"# Shortcut audit: {name}",
        "",
        f"Command: `{settings['command']}`",
        "",
        f"* Images: {n_normal} normal + {n_abnormal} abnormal; statistics at {settings['image_size']} px "
        "(package reader, grey, bicubic).",
        "* Matched subsets (greedy nearest-neighbour matching without replacement, closest pairs first, "
        f"within the caliper; at least {settings['min_pairs']} pairs for an AUROC): {matched}.",
        f"* AUROC in %, 95% CI: percentile bootstrap, {draws:,} draws, seed {seed} (all images: resampled "
        "within each class; matched: pairs resampled). rho: Spearman correlation of the score with each "
        "statistic.",
        *[f"* **Note:** {note}" for note in notes],
        "",
        "## The model",
        "",
        audit_table(models),
        "",
        "Read it: a matched AUROC well below the test AUROC means part of the score follows that "
        "statistic (acquisition), not the disease; the statistic's own AUROC below is the floor a model "
        "must clear.",
        "",
        "## Statistic baselines (no model: one global statistic of the image, sign chosen on these images)",
        "",
        audit_table(statistics),
        "",
        "![audit](audit.png)",
        "",
    ]
    groups = {}
    for audit in metadata:
        groups.setdefault(audit.source, []).append(audit)
    for source, audits in groups.items():
        lines += metadata_section(audits, f"Acquisition: {source}")
    payload = {
        "model": name,
        "settings": dict(settings),
        "images": {"normal": n_normal, "abnormal": n_abnormal},
        "matched_pairs": {s: len(p) for s, p in pairs.items()},
        "notes": notes,
        "rows": [
            {
                "model": r.model,
                "test": _auroc_json(r.test),
                **{f"{s}_matched": _auroc_json(r[s]) for s in pairs},
                **{rho: float(r[rho]) for rho in RHOS},
            }
            for _, r in rows.iterrows()
        ],
        "metadata": [
            {
                "attribute": a.name,
                "source": a.source,
                "auroc_alone": a.auroc,
                "numeric": a.numeric,
                "groups": [
                    {
                        "value": g.value,
                        "normal": g.n_normal,
                        "abnormal": g.n_abnormal,
                        "model": _auroc_json(g.auroc),
                    }
                    for g in a.groups
                ],
            }
            for a in metadata
        ],
    }
    return "\n".join(lines), payload
