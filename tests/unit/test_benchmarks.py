"""The benchmark suite's config checks, command-line overrides and report tables, and the shared helpers."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.common import instantiate, write_text_atomic
from benchmarks.suite.cli import _earlier_rows
from benchmarks.suite.config import (
    SCORES_FILE,
    ModelSpec,
    expand_jobs,
    load_config,
    select_models,
    set_data_roots,
)
from benchmarks.suite.report import _threads, budget, statistic_table, summary_table, write_report

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "benchmarks" / "configs"


def _write(tmp_path: Path, models: list[dict]) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"datasets": [{"name": "d", "class_path": "x.Y"}], "models": models}))
    return path


def test_config_rejects_validation_less_often_than_every_epoch(tmp_path):
    path = _write(tmp_path, [{"name": "m", "class_path": "x.Z", "trainer": {"check_val_every_n_epoch": 2}}])
    with pytest.raises(ValueError, match="model m: check_val_every_n_epoch must be 1, got 2"):
        load_config(path)


def test_config_rejects_unknown_checkpoint_selection(tmp_path):
    path = _write(tmp_path, [{"name": "m", "class_path": "x.Z", "select": ["last", "best"]}])
    with pytest.raises(ValueError, match="model m: select must be one or a list of"):
        load_config(path)


def test_select_list_gives_one_entry_per_checkpoint_last_first():
    spec = ModelSpec(name="SimSID", class_path="x.Z", select=["best_val_auroc", "last"])
    assert spec.selects == ["last", "best_val_auroc"]
    assert [spec.entry(s) for s in spec.selects] == ["SimSID, last", "SimSID, best val"]
    assert ModelSpec(name="PaDiM", class_path="x.Z").entry("last") == "PaDiM"


def test_data_root_and_models_overrides(tmp_path):
    config = load_config(CONFIGS / "adult_cxr.yaml")
    set_data_roots(config, [f"adult-cxr-dev={tmp_path}"])
    select_models(config, "PaDiM,PatchCore")
    jobs = expand_jobs(config)
    assert {j.model["name"] for j in jobs} == {"PaDiM", "PatchCore"}
    assert all(j.dataset["init_args"]["root"] == str(tmp_path) for j in jobs)
    assert [j.keep_checkpoints for j in jobs] == [False] * len(jobs)
    with pytest.raises(
        ValueError, match=r"--data-root: expected DATASET=PATH with DATASET one of \['adult-cxr-dev'\]"
    ):
        set_data_roots(config, ["zhanglab=/data"])
    with pytest.raises(ValueError, match=r"--models: unknown \['Nope'\]"):
        select_models(config, "PaDiM,Nope")


def test_shipped_configs_have_no_machine_paths():
    for path in CONFIGS.glob("*.yaml"):
        config = load_config(path)
        for data in config["datasets"]:
            assert not Path(data.init_args["root"]).is_absolute(), path.name


def test_adult_cxr_config_tests_simsid_at_last_and_best_with_the_zhanglab_baselines():
    adult, zhang = load_config(CONFIGS / "adult_cxr.yaml"), load_config(CONFIGS / "zhanglab.yaml")
    models = {m.name: m for m in adult["models"]}
    assert models["SimSID"].selects == ["last", "best_val_auroc"]
    assert models["SimSID"].init_args["memory"] == "matrix"
    assert adult["datasets"][0].class_path == "anomalib_simsid.XRayFolder"
    for baseline in zhang["models"]:
        if baseline.class_path != "anomalib_simsid.SimSID":  # same backbones, layers, sizes as ZhangLab's
            same = {k: v for k, v in baseline.init_args.items() if k != "cache"}  # cache: the set's own
            assert {**models[baseline.name].init_args, "cache": None} == {**same, "cache": None}
            assert models[baseline.name].readouts == baseline.readouts, baseline.name


@pytest.mark.parametrize("name", ["zhanglab", "adult_cxr"])
def test_robust_suite_row_is_the_paper_row_plus_the_score(name: str) -> None:
    """The robust rows differ from the paper rows by the one deviation the robust configs make."""
    models = {m.name: m for m in load_config(CONFIGS / f"{name}.yaml")["models"]}
    paper, robust = models["SimSID"], models["SimSID robust"]
    assert robust.init_args == {**paper.init_args, "score": "calibrated_residual"}
    assert robust.seeds == [0, 1, 2]
    assert robust.curves
    assert not paper.curves


def _row(entry: str, select: str, seed: int, auroc: float) -> dict:
    return {
        "dataset": "d", "model": entry.split(",")[0], "entry": entry, "select": select, "seed": seed,
        "image_AUROC": auroc, "image_AUPR": 0.5, "image_F1": 0.5, "image_accuracy": 0.5,
        "oracle_accuracy": 0.6, "oracle_F1": 0.6, "epochs_run": 3, "max_epochs": 10,
        "selected_epoch": 2 if select == "last" else 1, "selected_step": 30, "selected_val_AUROC": 0.7,
        "fit_s": 5400.0, "test_images_per_s": 10.0, "latency_ms": 50.0, "peak_rss_mb": 900.0,
    }  # fmt: skip


def test_summary_rows_state_budget_and_seeds_and_missing_models_show_as_not_run():
    simsid = ModelSpec(
        name="SimSID", class_path="x.Z", max_epochs=10, trainer={"max_time": "00:01:30:00"},
        select=["last", "best_val_auroc"], seeds=[0],
    )  # fmt: skip
    padim = ModelSpec(name="PaDiM", class_path="x.P")
    results = pd.DataFrame(
        [_row("SimSID, last", "last", 0, 0.8), _row("SimSID, best val", "best_val_auroc", 0, 0.7)]
    )
    lines = summary_table(results, "d", [simsid, padim], seeds=[0, 1, 2]).splitlines()
    last, best, padim_row = lines[2], lines[3], lines[4]
    assert last.startswith("| SimSID, last | 1 (0) | **80.0** |")
    assert "| 3 / 10, cap 90.0 min | last: epoch 2 step 30 (val AUROC 70.0) | 90.0 min |" in last
    assert best.startswith("| SimSID, best val | 1 (0) | **70.0** |")
    assert "| epoch 1 step 30 (val AUROC 70.0) |" in best
    assert padim_row.startswith("| PaDiM | not run (max 1 epoch; seeds 0, 1, 2; see Notes) |")
    assert padim_row.count("|") == lines[0].count("|")
    assert budget(simsid, [0]) == "max 10 epochs or 90.0 min of fit, whichever first; seeds 0"


def test_report_reads_results_written_when_jobs_tested_one_checkpoint(tmp_path):
    """The committed ZhangLab CSVs (no ``entry``/``select`` columns) still make a full report."""
    committed = REPO / "benchmarks" / "results" / "zhanglab"
    for name in ("results.csv", SCORES_FILE, "run.json"):
        shutil.copy(committed / name, tmp_path / name)
    config = load_config(CONFIGS / "zhanglab.yaml")
    info = json.loads((tmp_path / "run.json").read_text())
    write_report(config, tmp_path, info, [])
    summary = (tmp_path / "summary.md").read_text()
    assert "| SimSID | 1 (0) | **82.7** |" in summary
    assert "cap 33.0 min" in summary
    assert "| PaDiM | 3 (0, 1, 2) | **75.8 ± 0.3** |" in summary
    assert (tmp_path / "roc_ZhangLab.png").stat().st_size > 10_000


def test_models_left_out_keep_their_earlier_rows_only_with_unchanged_settings(tmp_path):
    """``--models SimSID`` adds SimSID to a table of baselines run earlier, without rerunning them."""
    config = load_config(CONFIGS / "adult_cxr.yaml")
    hashes = {j.model["name"]: j.spec_hash for j in expand_jobs(config)}
    rows = [
        {**_row("PaDiM", "last", 0, 0.8), "spec_hash": hashes["PaDiM"], "torch_threads": 1},
        {**_row("PatchCore", "last", 0, 0.7), "spec_hash": "stale", "torch_threads": 1},  # other settings
        {**_row("SimSID, last", "last", 0, 0.6), "spec_hash": hashes["SimSID"], "torch_threads": 1},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    scores = [
        {"dataset": "d", "model": m, "seed": 0, "label": i % 2, "score": i} for m in hashes for i in range(4)
    ]
    pd.DataFrame(scores).to_csv(tmp_path / SCORES_FILE, index=False)

    select_models(config, "SimSID")
    results, kept_scores = _earlier_rows(config, tmp_path)
    assert list(results.model) == ["PaDiM"]  # PatchCore's settings changed; SimSID runs now
    assert results.reused.all()
    assert set(kept_scores.model) == {"PaDiM"}
    assert len(kept_scores) == 4

    config.pop("run_models")  # a full run keeps nothing: every model runs (or is reused via --resume)
    assert _earlier_rows(config, tmp_path)[0].empty
    select_models(config, "SimSID")
    pd.DataFrame(rows).drop(columns="spec_hash").to_csv(tmp_path / "results.csv", index=False)
    assert _earlier_rows(config, tmp_path)[0].empty  # rows without settings hash are never matched


def test_report_states_threads_per_model_when_rows_differ():
    one = pd.DataFrame([{"model": "PaDiM", "torch_threads": 1}, {"model": "SimSID", "torch_threads": 1}])
    assert _threads(one, 2) == "; torch threads per job: 1"
    mixed = one.assign(torch_threads=[1, 2])
    assert _threads(mixed, 2) == "; torch threads per job: PaDiM 1, SimSID 2"
    assert _threads(pd.DataFrame(), None) == ""


def test_instantiate_builds_nested_class_paths_and_callables():
    spec = {
        "class_path": "torchvision.transforms.v2.Compose",
        "init_args": {"transforms": [{"class_path": "torchvision.transforms.v2.Identity"}]},
    }
    built = instantiate(spec)
    assert type(built.transforms[0]).__name__ == "Identity"
    assert (
        instantiate({"class_path": "fractions.Fraction", "init_args": {"numerator": 3, "denominator": 6}})
        == 0.5
    )
    with pytest.raises(ValueError, match="class_path must be dotted"):
        instantiate({"class_path": "Identity"})


def test_write_text_atomic_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "result.json"
    write_text_atomic(target, "{}")
    write_text_atomic(target, '{"a": 1}')
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_statistic_baselines_expand_into_models_and_models_statistics_selects_them(tmp_path):
    config = load_config(CONFIGS / "zhanglab.yaml")
    stats = [m for m in config["models"] if m.class_path == "benchmarks.audit.baselines.StatisticBaseline"]
    assert [m.name for m in stats] == [
        "stat: mean intensity", "stat: std", "stat: sharpness", "stat: p05", "stat: p95", "stat: entropy",
    ]  # fmt: skip
    assert all(m.init_args["image_size"] == 128 and m.seeds == [0] for m in stats)
    built = instantiate({"class_path": stats[2].class_path, "init_args": stats[2].init_args})
    assert (built.statistic, built.image_size) == ("sharpness", 128)
    select_models(config, "statistics,SimSID")
    assert sorted(j.model["name"] for j in expand_jobs(config)) == sorted(
        [m.name for m in stats] + ["SimSID"]
    )

    bad = _write(tmp_path, [{"name": "m", "class_path": "x.Z"}])
    raw = yaml.safe_load(bad.read_text())
    bad.write_text(
        yaml.safe_dump({**raw, "statistic_baselines": {"image_size": 64, "statistics": ["contrast"]}})
    )
    with pytest.raises(ValueError, match=r"statistic_baselines: unknown \['contrast'\]"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({**raw, "statistic_baselines": {"statistics": ["mean"]}}))
    with pytest.raises(ValueError, match="must be a mapping with image_size"):
        load_config(bad)


def test_statistic_baselines_get_a_block_of_their_own_in_the_summary():
    config = load_config(CONFIGS / "adult_cxr.yaml")
    models = [m for m in config["models"] if m.name.startswith("stat: ")]
    row = {**_row("stat: sharpness", "last", 0, 0.724), "selected_val_AUROC": 0.744, "statistic_sign": -1.0}
    results = pd.DataFrame([row, _row("PaDiM", "last", 0, 0.8)])
    table = statistic_table(results, "d", models).splitlines()
    assert table[0].startswith("| statistic (no training) | sign (chosen on val) | val AUROC | test AUROC |")
    assert "| stat: sharpness | lower = abnormal | 74.4 | **72.4** | 50.0 | 60.0 | 60.0 |" in table
    assert "| stat: mean intensity | not run |" in "\n".join(table)
    assert "PaDiM" not in "\n".join(table)
    trained = [m for m in config["models"] if not m.name.startswith("stat: ")]
    assert "stat:" not in summary_table(results, "d", trained, [0])


def test_keep_changed_rows_keeps_and_marks_rows_of_other_settings(tmp_path):
    """``--models statistics --keep-changed-rows`` adds the baselines to a table run under older settings."""
    config = load_config(CONFIGS / "adult_cxr.yaml")
    hashes = {j.model["name"]: j.spec_hash for j in expand_jobs(config)}
    rows = [
        {**_row("PaDiM", "last", 0, 0.8), "spec_hash": hashes["PaDiM"]},
        {**_row("PatchCore", "last", 0, 0.7), "spec_hash": "stale"},
        {**_row("stat: std", "last", 0, 0.6), "spec_hash": "stale"},  # runs now: replaced
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    pd.DataFrame(
        [{"dataset": "d", "model": r["model"], "seed": 0, "label": 1, "score": 0.0} for r in rows]
    ).to_csv(tmp_path / SCORES_FILE, index=False)
    select_models(config, "statistics")
    assert list(_earlier_rows(config, tmp_path)[0].model) == ["PaDiM"]
    results, scores = _earlier_rows(config, tmp_path, keep_changed=True)
    assert list(results.model) == ["PaDiM", "PatchCore"]
    assert list(results.settings_changed) == [False, True]
    assert set(scores.model) == {"PaDiM", "PatchCore"}


def test_readouts_name_rows_and_enter_the_settings_hash_only_when_set() -> None:
    from benchmarks.suite.config import Job

    spec = ModelSpec(name="PaDiM", class_path="x.Z", readouts=["score", "mean"])
    assert [spec.entry(*e) for e in spec.entries] == ["PaDiM", "PaDiM (mean)"]

    def job(model: ModelSpec) -> Job:
        return Job("j", {"name": "d"}, asdict(model), 0, "cpu", "/tmp/j", 1)

    plain = ModelSpec(name="PaDiM", class_path="x.Z")
    legacy = {k: v for k, v in asdict(plain).items() if k != "readouts"}  # a job written before the key
    assert job(plain).spec_hash == Job("j", {"name": "d"}, legacy, 0, "cpu", "/tmp/j", 1).spec_hash
    assert job(spec).spec_hash != job(plain).spec_hash
