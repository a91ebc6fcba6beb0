"""The ``python -m benchmarks.suite`` command: run the jobs of a config, then write the report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.audit import write_audit
from benchmarks.common import device_name, write_text_atomic
from benchmarks.diagnose import MODEL_SIZE
from benchmarks.suite.config import SCORES_FILE, expand_jobs, load_config, select_models, set_data_roots
from benchmarks.suite.jobs import execute, finished, job_child
from benchmarks.suite.report import write_report


def _prepare_env(config: dict[str, Any]) -> dict[str, str]:
    """Config ``env`` (paths made absolute) applied here and passed to job processes."""
    extra = {}
    for key, value in config["env"].items():
        value = str(value)
        if key.endswith(("_CACHE", "_HOME", "_DIR")):
            value = str(Path(value).expanduser().resolve())
        extra[key] = value
    if config["torch_threads"]:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            extra.setdefault(key, str(config["torch_threads"]))
    os.environ.update(extra)
    return dict(os.environ)


def _install_backbones(config: dict[str, Any]) -> None:
    """Install the config's offline backbones into ``HF_HUB_CACHE`` when missing (idempotent)."""
    run = config.get("run_models")
    # Only models with a pretrained backbone need one (not SimSID, not the statistic baselines).
    users = [m for m in config["models"] if "backbone" in m.init_args and (run is None or m.name in run)]
    if not config["backbones"] or not users:
        return
    cache = os.environ.get("HF_HUB_CACHE")
    if not cache:
        msg = "config 'backbones' needs env HF_HUB_CACHE (where to install them)"
        raise ValueError(msg)
    from anomalib_simsid import backbones

    for entry in config["backbones"]:
        if entry == "efficientnet-lite0":
            name, install = "tf_efficientnet_lite0", lambda: backbones.install_efficientnet_lite0(cache)
        else:
            name = entry["name"]
            install = lambda e=entry: backbones.install_timm_weights(  # noqa: E731
                e["name"], e["weights"], cache, by_position=e.get("by_position", False)
            )
        entry_dir = Path(cache) / ("models--" + backbones.hub_id(name).replace("/", "--")) / "refs" / "main"
        if not entry_dir.is_file():
            print(f"installing backbone {name} -> {install()}", flush=True)


def _parser() -> argparse.ArgumentParser:
    import benchmarks.suite

    summary = (benchmarks.suite.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=summary)
    parser.add_argument("--config", type=Path, help="suite YAML (benchmarks/configs/*.yaml)")
    parser.add_argument("--output-dir", type=Path, help="override the config's output_dir")
    parser.add_argument("--work-dir", type=Path, help="override the config's work_dir")
    parser.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DATASET=PATH",
        help="folder of a dataset of the config (its init_args.root); repeatable",
    )
    parser.add_argument(
        "--models",
        help="run only these models (comma-separated); the others keep their rows of an earlier "
        "invocation in the output folder when its settings are unchanged, else show as 'not run'",
    )
    parser.add_argument(
        "--keep-changed-rows",
        action="store_true",
        help="with --models: keep the other models' earlier rows even where their settings hash differs "
        "from the config's (the summary lists them), e.g. to add statistic baselines to an old table",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each job's checkpoints (last.ckpt, best-*.ckpt) after scoring; default: delete them",
    )
    parser.add_argument(
        "--resume", action="store_true", help="reuse finished jobs and last.ckpt of unfinished ones"
    )
    parser.add_argument(
        "--inline", action="store_true", help="run jobs in this process (no per-job isolation)"
    )
    parser.add_argument(
        "--torch-threads", type=int, help="override the config's torch_threads (threads per job)"
    )
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed job")
    parser.add_argument("--job-timeout", type=float, default=None, help="seconds per job (subprocess mode)")
    parser.add_argument("--report-only", action="store_true", help="rebuild summary.md/plots from the CSVs")
    parser.add_argument("--run-job", help=argparse.SUPPRESS)
    return parser


def _run_info(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """Provenance for the report; versions from package metadata (the parent never imports torch)."""
    from importlib.metadata import version

    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    return {
        "command": f"python -m benchmarks.suite {argv}",
        "device": device_name(config["accelerator"]),
        "torch": version("torch"),
        "anomalib": version("anomalib"),
        "python": platform.python_version(),
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inline": args.inline,
    }


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat`` of the non-empty frames (pandas deprecates empty ones in a concat)."""
    kept = [f for f in frames if not f.empty]
    return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()


def _earlier_rows(
    config: dict[str, Any], out: Path, keep_changed: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows in ``out`` of the models that ``--models`` leaves out, where their settings are unchanged.

    So a slow model can be added to a table of fast ones later (or on other hardware) without rerunning
    them; rows whose settings hash differs from what the config would run now are dropped, unless
    ``keep_changed`` (then they are marked ``settings_changed``).
    """
    run_models = config.get("run_models")
    if run_models is None or not (out / "results.csv").is_file():
        return pd.DataFrame(), pd.DataFrame()
    others = {**config, "run_models": [m.name for m in config["models"] if m.name not in run_models]}
    hashes = {job.spec_hash for job in expand_jobs(others)}
    results = pd.read_csv(out / "results.csv")
    if keep_changed:
        results = results[~results.model.isin(run_models)]
        changed = ~results.spec_hash.isin(hashes) if "spec_hash" in results else True
        results = results.assign(reused=True, settings_changed=changed)
    elif "spec_hash" not in results:  # written before jobs recorded their settings: nothing to match
        return pd.DataFrame(), pd.DataFrame()
    else:
        results = results[results.spec_hash.isin(hashes)].assign(reused=True)
    if results.empty or not (out / SCORES_FILE).is_file():
        return results, pd.DataFrame()
    scores = pd.read_csv(out / SCORES_FILE)
    kept = set(zip(results.dataset, results.model, results.seed, strict=True))
    mask = [key in kept for key in zip(scores.dataset, scores.model, scores.seed, strict=True)]
    return results, scores[mask]


def _audit(config: dict[str, Any], out: Path) -> list[str]:
    """Run the shortcut audit on the output's scores file; return the failure (for the report), if any."""
    if not (out / SCORES_FILE).is_file():
        return []
    roots = {d.name: str(d.init_args.get("root", "")) for d in config["datasets"]}
    size = (config.get("statistic_baselines") or {}).get("image_size", MODEL_SIZE)
    command = "python -m benchmarks.audit --scores {} {} --image-size {}".format(
        out / SCORES_FILE, " ".join(shlex.quote(f"--root={k}={v}") for k, v in roots.items()), size
    )
    try:
        write_audit(out / SCORES_FILE, roots, out, size, command=command)
    except (OSError, ValueError) as err:
        print(f"shortcut audit FAILED: {err}", file=sys.stderr, flush=True)
        return [f"shortcut audit: {type(err).__name__}: {err}"]
    return []


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM -> KeyboardInterrupt: ``subprocess.run`` then kills the job process before re-raising."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; 0 only if every job succeeded."""
    args = _parser().parse_args(argv)
    if args.run_job:
        return job_child(args.run_job)
    if args.config is None:
        _parser().error("--config is required")
    config = load_config(args.config)
    if args.output_dir:
        config["output_dir"] = str(args.output_dir)
    if args.work_dir:
        config["work_dir"] = str(args.work_dir)
    if args.torch_threads:
        config["torch_threads"] = args.torch_threads
    set_data_roots(config, args.data_root)
    if args.models:
        select_models(config, args.models)
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        info = json.loads((out / "run.json").read_text())
        failures = _audit(config, out)
        write_report(config, out, info, info.get("failures", []) + failures)
        return 1 if failures else 0

    env = _prepare_env(config)
    signal.signal(signal.SIGTERM, _interrupt)  # so `kill <suite pid>` also ends the running job's process
    started = time.perf_counter()
    info = _run_info(args, config)
    _install_backbones(config)
    jobs = expand_jobs(config, resume=args.resume, keep_checkpoints=args.keep_checkpoints)
    earlier_results, earlier_scores = _earlier_rows(config, out, args.keep_changed_rows)
    if not earlier_results.empty:
        print(f"keeping earlier rows of {', '.join(sorted(set(earlier_results.model)))}", flush=True)
    print(f"{len(jobs)} jobs: {', '.join(j.job_id for j in jobs)}", flush=True)
    results, failures = [], []
    for index, job in enumerate(jobs, 1):
        done = finished(job) if args.resume else None
        if done is not None:
            print(f"[{index}/{len(jobs)}] {job.job_id}: reusing finished result", flush=True)
            results.extend({**r, "reused": True} for r in done)
            continue
        print(f"[{index}/{len(jobs)}] {job.job_id}", flush=True)
        try:
            results.extend(execute(job, args.inline, env, args.job_timeout))
        except RuntimeError as err:
            failures.append(f"{job.job_id}: {err}")
            print(f"[{index}/{len(jobs)}] {job.job_id} FAILED: {err}", flush=True)
            if args.fail_fast:
                break

    frame = _concat([earlier_results, pd.DataFrame(results)])
    if not frame.empty:
        write_text_atomic(out / "results.csv", frame.to_csv(index=False))
        # Only the scores of jobs whose result is part of this run (same settings hash).
        score_files = [Path(j.job_dir) / "scores.csv" for j in jobs if finished(j) is not None]
        scores = _concat([earlier_scores, *(pd.read_csv(p) for p in score_files if p.is_file())])
        write_text_atomic(out / SCORES_FILE, scores.to_csv(index=False, float_format="%.7g"))
    info.update(
        wall_s=time.perf_counter() - started,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        load_end=" ".join(f"{x:.1f}" for x in os.getloadavg()),
        failures=failures,
        config=str(args.config),
    )
    failures += _audit(config, out)
    info["failures"] = failures
    write_text_atomic(out / "run.json", json.dumps(info, indent=1, default=str))
    write_report(config, out, info, failures)
    print(f"wrote {out}/results.csv, {SCORES_FILE}, summary.md, audit.md", flush=True)
    if failures:
        print(
            f"{len(failures)} FAILED ({len(jobs)} jobs):\n  " + "\n  ".join(failures),
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0
