"""The suite's report: ``summary.md`` (tables beside the published numbers) and ROC/score plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import write_text_atomic
from benchmarks.suite.config import SCORES_FILE, ModelSpec, is_statistic, safe_name


def entries(models: Sequence[ModelSpec]) -> list[str]:
    """Table rows in config order: one per model and tested checkpoint (``ModelSpec.entry``)."""
    return [m.entry(*e) for m in models for e in m.entries]


def normalise(frame: pd.DataFrame, models: Sequence[ModelSpec]) -> pd.DataFrame:
    """Give rows written when every job tested one checkpoint the ``entry``/``select`` columns of today."""
    if frame.empty:
        return frame
    specs = {m.name: m for m in models}
    frame = frame.copy()
    for column, missing in (("entry", None), ("select", None), ("selected_val_AUROC", np.nan)):
        if column not in frame:
            frame[column] = missing
    old = frame["entry"].isna()
    frame.loc[old, "entry"] = frame.model[old]
    frame.loc[old, "select"] = [specs[m].selects[0] if m in specs else "last" for m in frame.model[old]]
    if "best_val_AUROC" in frame:
        frame.loc[old, "selected_val_AUROC"] = frame.best_val_AUROC[old]
    return frame


def _max_time(spec: ModelSpec) -> str:
    """Return the model's wall-time cap (Lightning's ``DD:HH:MM:SS``) as text, or "" when it has none."""
    value = spec.trainer.get("max_time")
    if not value:
        return ""
    if isinstance(value, str) and value.count(":") == 3:
        days, hours, minutes, seconds = (int(v) for v in value.split(":"))
        return _duration(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    return str(value)


def budget(spec: ModelSpec, seeds: Sequence[int]) -> str:
    """Describe the budget a model was given: epochs, wall-time cap, seeds."""
    cap = _max_time(spec)
    return (
        f"max {spec.max_epochs} epoch{'s' if spec.max_epochs != 1 else ''}"
        + (f" or {cap} of fit, whichever first" if cap else "")
        + f"; seeds {', '.join(str(s) for s in seeds)}"
    )


def _fmt(values: pd.Series, scale: float = 100.0, digits: int = 1) -> str:
    values = values.dropna() * scale
    if values.empty:
        return "n/a"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _duration(seconds: float) -> str:
    """Seconds as '42 s' or '3.5 min' (or 'n/a')."""
    if not math.isfinite(seconds):
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _tested(r: pd.DataFrame) -> str:
    """Which checkpoint each seed was tested at, with its validation AUROC."""
    cells = []
    for x in r.itertuples():
        if not math.isfinite(x.selected_step):
            continue
        cell = f"epoch {int(x.selected_epoch)} step {int(x.selected_step)}"
        if x.select == "last":
            cell = f"last: {cell}"
        if math.isfinite(x.selected_val_AUROC):
            cell += f" (val AUROC {100 * x.selected_val_AUROC:.1f})"
        cells.append(cell)
    return "; ".join(dict.fromkeys(cells)) or "last"  # seeds tested alike share one cell


def summary_table(
    results: pd.DataFrame, dataset: str, models: Sequence[ModelSpec], seeds: Sequence[int]
) -> str:
    """Markdown: one row per model and tested checkpoint, mean ± sample std (ddof=1) over seeds, percentages.

    Every row states its budget (epochs run / max and the wall-time cap, fit time, seeds); a configured
    model without results gets a "not run" row with the budget it was given.
    """
    head = (
        "| model | seeds | AUROC | AUPR | F1 @val thr | Acc @val thr | Acc (oracle) | F1 (oracle) "
        "| epochs run / max | tested checkpoint | fit time | test img/s | latency (ms/img, b=1) "
        "| peak RSS (MB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for spec in models:
        spec_seeds = spec.seeds if spec.seeds is not None else seeds
        cap = f", cap {_max_time(spec)}" if _max_time(spec) else ""
        for select, readout in spec.entries:
            name = spec.entry(select, readout)
            r = results[(results.dataset == dataset) & (results.entry == name)] if len(results) else results
            if r.empty:
                not_run = f"not run ({budget(spec, spec_seeds)}; see Notes)"
                rows.append(f"| {name} | {not_run} |{' |' * 6} 0 / {spec.max_epochs}{cap} |{' |' * 5}")
                continue
            epochs = (
                f"{'/'.join(sorted({str(int(e)) for e in r.epochs_run}))} / {int(r.max_epochs.max())}{cap}"
            )
            rows.append(
                f"| {name} | {len(r)} ({', '.join(str(s) for s in sorted(r.seed))}) "
                f"| **{_fmt(r.image_AUROC)}** | {_fmt(r.image_AUPR)} | {_fmt(r.image_F1)} "
                f"| {_fmt(r.image_accuracy)} | {_fmt(r.oracle_accuracy)} | {_fmt(r.oracle_F1)} | {epochs} "
                f"| {_tested(r)} | {_duration(float(r.fit_s.mean()))} | {r.test_images_per_s.mean():.1f} "
                f"| {r.latency_ms.mean():.0f} | {r.peak_rss_mb.max():.0f} |"
            )
    return head + "\n".join(rows) + "\n"


def statistic_table(results: pd.DataFrame, dataset: str, models: Sequence[ModelSpec]) -> str:
    """Markdown: one row per statistic baseline: the sign chosen on validation, val and test AUROC (%)."""
    out = (
        "| statistic (no training) | sign (chosen on val) | val AUROC | test AUROC | AUPR | Acc (oracle) "
        "| F1 (oracle) |\n|---|---|---|---|---|---|---|\n"
    )
    for spec in models:
        r = results[(results.dataset == dataset) & (results.entry == spec.name)] if len(results) else results
        if r.empty:
            out += f"| {spec.name} | not run |{' |' * 5}\n"
            continue
        x = r.iloc[0]
        sign = "higher = abnormal" if x.get("statistic_sign", 1) > 0 else "lower = abnormal"
        out += (
            f"| {spec.name} | {sign} | {_fmt(r.selected_val_AUROC)} | **{_fmt(r.image_AUROC)}** "
            f"| {_fmt(r.image_AUPR)} | {_fmt(r.oracle_accuracy)} | {_fmt(r.oracle_F1)} |\n"
        )
    return out


def published_table(published: list[dict[str, Any]], dataset: str) -> str:
    """Markdown of the published numbers the config lists for ``dataset`` (labelled as published)."""
    rows = [p for p in published if p.get("dataset") == dataset]
    if not rows:
        return ""
    out = "| model (published) | AUROC | Acc (oracle) | F1 (oracle) | source |\n|---|---|---|---|---|\n"
    for p in rows:
        out += (
            f"| {p['model']} | {p.get('auroc', 'n/a')} | {p.get('accuracy', 'n/a')} | {p.get('f1', 'n/a')} "
            f"| {p.get('source', '')} |\n"
        )
    return out


def plot_dataset(
    scores: pd.DataFrame, results: pd.DataFrame, dataset: str, models: Sequence[str], out: Path
) -> None:
    """``roc_<dataset>.png`` (every seed; legend mean ± std AUROC) and ``hist_<dataset>.png`` (first seed)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    models = [m for m in models if not scores[(scores.dataset == dataset) & (scores.entry == m)].empty]
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 6))
    for i, name in enumerate(models):
        sub = scores[(scores.dataset == dataset) & (scores.entry == name)]
        res = results[(results.dataset == dataset) & (results.entry == name)]
        for j, (_, seed_rows) in enumerate(sub.groupby("seed")):
            fpr, tpr, _ = roc_curve(seed_rows.label, seed_rows.score)
            label = f"{name}: AUROC {_fmt(res.image_AUROC)} (n={len(res)})" if j == 0 else None
            ax.plot(
                fpr, tpr, color=colors(i), alpha=1.0 if j == 0 else 0.35, lw=1.8 if j == 0 else 1, label=label
            )
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"{dataset}: test ROC (faint lines: further seeds)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"roc_{safe_name(dataset)}.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        sub = scores[(scores.dataset == dataset) & (scores.entry == name)]
        seed = sorted(sub.seed.unique())[0]
        sub = sub[sub.seed == seed]
        res = results[(results.dataset == dataset) & (results.entry == name) & (results.seed == seed)].iloc[0]
        bins = np.linspace(sub.score.min(), sub.score.max(), 40)
        ax.hist(sub.score[sub.label == 0], bins=bins, alpha=0.6, label="normal", color="tab:blue")
        ax.hist(sub.score[sub.label == 1], bins=bins, alpha=0.6, label="anomalous", color="tab:red")
        if math.isfinite(res.val_threshold):
            ax.axvline(res.val_threshold, color="k", ls="--", lw=1.2, label="val threshold (anomalib)")
        if math.isfinite(res.oracle_threshold):
            ax.axvline(res.oracle_threshold, color="k", ls=":", lw=1.2, label="oracle threshold (test)")
        ax.set(xlabel="raw anomaly score (model units)", ylabel="test images")
        ax.set_title(f"{name} (seed {seed}): AUROC {100 * res.image_AUROC:.1f}")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{dataset}: test score distributions")
    fig.tight_layout()
    fig.savefig(out / f"hist_{safe_name(dataset)}.png", dpi=110)
    plt.close(fig)


def _threads(results: pd.DataFrame, configured: int | None) -> str:
    """Torch threads per job as the rows record them (rows kept from earlier invocations may differ)."""
    if results.empty or "torch_threads" not in results:
        return f"; torch threads per job: {configured}" if configured else ""
    per_model = results.groupby("model", sort=False).torch_threads.first().astype(int)
    if per_model.nunique() == 1:
        return f"; torch threads per job: {per_model.iloc[0]}"
    return "; torch threads per job: " + ", ".join(f"{m} {n}" for m, n in per_model.items())


def write_report(config: dict[str, Any], out: Path, run_info: dict[str, Any], failures: list[str]) -> None:
    """``summary.md`` and the PNGs from ``results.csv`` and the scores file in ``out``."""
    results = pd.read_csv(out / "results.csv") if (out / "results.csv").is_file() else pd.DataFrame()
    scores = pd.read_csv(out / SCORES_FILE) if (out / SCORES_FILE).is_file() else pd.DataFrame()
    results, scores = normalise(results, config["models"]), normalise(scores, config["models"])
    models = [m for m in config["models"] if not is_statistic(m)]
    statistics = [m for m in config["models"] if is_statistic(m)]
    names = entries(models)
    lines = [f"# Benchmark `{config['name']}`", ""]
    lines += [
        f"* Command: `{run_info['command']}`",
        f"* Machine: {run_info['device']}; accelerator `{config['accelerator']}`; torch {run_info['torch']}, "
        f"anomalib {run_info['anomalib']}; load average at start {run_info['load_start']}, at end "
        f"{run_info.get('load_end', 'n/a')}",
        f"* Finished {run_info.get('finished', 'n/a')}; wall time of this invocation "
        f"{_duration(run_info.get('wall_s', math.nan))}"
        + (
            f", sum of all jobs' wall times {_duration(float(results.job_s.sum()))}"
            if not results.empty
            else ""
        )
        + _threads(results, config["torch_threads"]),
        "* Metrics on the test split from raw scores (scikit-learn), percentages, mean ± sample std over "
        "seeds. "
        "F1/Acc @val thr: anomalib's F1-adaptive threshold fitted on the validation split (as deployed). "
        "**Acc/F1 (oracle)**: threshold maximising accuracy on the test set itself, as the SimSID/SQUID "
        "papers "
        "report; optimistic, only for comparison with published tables. AUROC is the headline.",
        "* Fit time includes the per-epoch validation passes; latency is the median of the deployable "
        "forward "
        "(pre-processing, model, post-processing) at batch size 1; peak RSS is per job process"
        + (" (process-wide: --inline)" if run_info.get("inline") else "")
        + ".",
        "",
    ]
    if "reused" in results and results.reused.fillna(False).astype(bool).any():
        reused = results[results.reused.fillna(False).astype(bool)]
        changed = (
            reused.settings_changed.fillna(False).astype(bool)
            if "settings_changed" in reused
            else pd.Series(False, index=reused.index)
        )
        same, kept = reused[~changed], reused[changed]

        def who(rows: pd.DataFrame) -> str:
            return ", ".join(dict.fromkeys(f"{x.model} seed {x.seed}" for x in rows.itertuples()))

        if not same.empty:
            lines.append(
                "* Reused from an earlier invocation (same settings hash; --resume, or a model left out by "
                f"--models): {who(same)}"
            )
        if not kept.empty:
            lines.append(
                "* Kept from an earlier invocation although the config's settings for them changed since "
                f"(--keep-changed-rows; their settings hash differs): {who(kept)}"
            )
        lines.append("")
    if failures:
        lines += ["## FAILED jobs", "", *[f"* {f}" for f in failures], ""]
    for data in config["datasets"]:
        lines += [f"## {data.name}", "", "Measured by this suite:", ""]
        lines.append(summary_table(results, data.name, models, config["seeds"]))
        if statistics:
            lines += [
                "Statistic baselines, not models (no training: one global statistic of each image at the "
                "models' input size, the sign that ranks abnormal higher on validation):",
                "",
                statistic_table(results, data.name, statistics),
            ]
        if (out / "audit.md").is_file():
            lines += [
                "Shortcut audit (AUROC with 95% CIs on all test images and on pairs matched on sharpness "
                "and mean intensity): [audit.md](audit.md).",
                "",
            ]
        pub = published_table(config["published"], data.name)
        if pub:
            lines += ["Published (not measured here; other code, splits and budgets):", "", pub]
        lines += ["Settings:", ""]
        for m in models:
            seeds = m.seeds if m.seeds is not None else config["seeds"]
            lines.append(
                f"* **{m.name}** (`{m.class_path}`, {budget(m, seeds)}, tested at {', '.join(m.selects)}): "
                f"{m.settings or json.dumps(m.init_args)}"
            )
        lines.append("")
        if not scores.empty and not scores[scores.dataset == data.name].empty:
            plot_dataset(scores, results, data.name, names, out)
            lines += [
                f"![ROC]({'roc_' + safe_name(data.name)}.png)",
                "",
                f"![scores]({'hist_' + safe_name(data.name)}.png)",
                "",
            ]
    if config["notes"]:
        lines += ["## Notes", "", *[f"* {n}" for n in config["notes"]], ""]
    write_text_atomic(out / "summary.md", "\n".join(lines))
