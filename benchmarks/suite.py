"""One command for "is SimSID better than PatchCore and PaDiM on my data, and what does it cost?".

    python -m benchmarks.suite --config benchmarks/configs/zhanglab.yaml [--resume] [--inline]

Runs every (model, dataset, seed) of the config and writes to ``output_dir``: ``results.csv`` (one
row per job), ``scores.csv`` (every test image's raw score), ``summary.md`` (mean ± std over seeds
beside the published numbers) and per dataset ``roc_<dataset>.png`` and ``hist_<dataset>.png``.

Why not ``anomalib benchmark``: it cannot set ``max_epochs``, exits 0 when jobs fail, and breaks
when models differ in their settings (anomalib-notes §7.2). This is a plain loop instead; each job
does ``seed_everything``, builds model and datamodule from ``class_path``/``init_args``, fits with
``Engine(max_epochs=<model spec>)`` and scores the test set itself. Any failed job makes the
command exit 1.

Metrics are computed here with scikit-learn from the *raw* test scores: anomalib's normalised
``pred_score`` is clipped to [0, 1], which ties the tails and biases AUROC. "F1"/"accuracy" use
anomalib's threshold fitted on the validation split (F1-adaptive, as deployed); the "oracle"
accuracy/F1 use the threshold maximising accuracy on the test set itself, as the SimSID/SQUID
papers report (optimistic, for comparison with published tables only).

Each job runs in a fresh subprocess by default, so peak memory (``ru_maxrss``) is per job and a
crash cannot take the suite down; ``--inline`` runs jobs in this process (faster start, for tests;
peak RSS is then process-wide). Finished jobs are kept under ``work_dir/jobs/<id>/`` and reused by
``--resume``; models with ``checkpoint: true`` also resume mid-training from ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_TOKEN = "${seed}"
METRICS = ("image_AUROC", "image_AUPR", "image_F1", "image_accuracy", "oracle_accuracy", "oracle_F1")
SELECT = ("last", "best_val_auroc")


# ------------------------------------------------------------------------------------------ config


@dataclass
class ModelSpec:
    """One model of the suite, with its own trainer budget (``max_epochs``) and data overrides."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 1
    trainer: dict[str, Any] = field(default_factory=dict)  # extra Engine/Trainer arguments
    data: dict[str, Any] = field(default_factory=dict)  # datamodule init_args overrides
    seeds: list[int] | None = None  # overrides the suite's seeds
    select: str = "last"  # or best_val_auroc: test the checkpoint with the best validation AUROC
    checkpoint: bool = False  # save last.ckpt every epoch (resumable); implied by best_val_auroc
    settings: str = ""  # one line for the tables (backbone, sizes, budget)


@dataclass
class DataSpec:
    """One dataset (datamodule); ``"${seed}"`` anywhere in ``init_args`` becomes the job's seed."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """Everything a job needs, JSON-serialisable so it can cross into a subprocess."""

    job_id: str
    dataset: dict[str, Any]
    model: dict[str, Any]
    seed: int
    accelerator: str
    job_dir: str
    latency_images: int
    resume: bool = False
    torch_threads: int | None = None

    @property
    def spec_hash(self) -> str:
        """Identity of the job's settings, so ``--resume`` never reuses a result of other settings."""
        payload = json.dumps(
            [self.dataset, self.model, self.seed, self.accelerator], sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _fields(cls: type, raw: dict[str, Any], where: str) -> dict[str, Any]:
    known = set(cls.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        msg = f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(known)})"
        raise ValueError(msg)
    return raw


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a suite YAML (see ``benchmarks/configs/smoke.yaml`` for every key)."""
    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict):
        msg = f"{path}: expected a mapping"
        raise ValueError(msg)
    for key in ("models", "datasets"):
        if not config.get(key):
            msg = f"{path}: '{key}' must be a non-empty list"
            raise ValueError(msg)
    config["models"] = [ModelSpec(**_fields(ModelSpec, m, f"{path}: model")) for m in config["models"]]
    config["datasets"] = [DataSpec(**_fields(DataSpec, d, f"{path}: dataset")) for d in config["datasets"]]
    for spec in config["models"]:
        if spec.select not in SELECT:
            msg = f"{path}: model {spec.name}: select must be one of {SELECT}, got {spec.select!r}"
            raise ValueError(msg)
    names = [m.name for m in config["models"]] + [d.name for d in config["datasets"]]
    if len(set(names)) != len(names):
        msg = f"{path}: model and dataset names must be unique, got {names}"
        raise ValueError(msg)
    config.setdefault("name", Path(path).stem)
    config.setdefault("seeds", [0])
    config.setdefault("accelerator", "cpu")
    config.setdefault("latency_images", 20)
    config.setdefault("torch_threads", None)
    config.setdefault("env", {})
    config.setdefault("backbones", [])
    config.setdefault("published", [])
    config.setdefault("notes", [])
    config.setdefault("output_dir", f"benchmarks/results/{config['name']}")
    config.setdefault("work_dir", f"benchmarks/work/{config['name']}")
    return config


def _substitute(value: Any, seed: int) -> Any:
    if value == SEED_TOKEN:
        return seed
    if isinstance(value, dict):
        return {k: _substitute(v, seed) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, seed) for v in value]
    return value


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def expand_jobs(config: dict[str, Any], resume: bool = False) -> list[Job]:
    """Expand datasets x models x seeds into jobs (a model's own ``seeds`` win)."""
    jobs = []
    work = Path(config["work_dir"]).resolve()
    for data in config["datasets"]:
        for model in config["models"]:
            for seed in model.seeds if model.seeds is not None else config["seeds"]:
                init_args = {**data.init_args, **model.data}
                dataset = {
                    "name": data.name,
                    "class_path": data.class_path,
                    "init_args": _substitute(init_args, seed),
                }
                job_id = _safe(f"{data.name}-{model.name}-seed{seed}")
                jobs.append(
                    Job(
                        job_id=job_id,
                        dataset=dataset,
                        model=_substitute(asdict(model), seed),
                        seed=int(seed),
                        accelerator=str(config["accelerator"]),
                        job_dir=str(work / "jobs" / job_id),
                        latency_images=int(config["latency_images"]),
                        resume=resume,
                        torch_threads=config["torch_threads"],
                    )
                )
    return jobs


def instantiate(spec: Any) -> Any:
    """Build ``{class_path, init_args}`` dicts (recursively) by import; leave other values as they are.

    ``class_path`` may be dotted (``anomalib.models.Padim``) or a callable returning the object
    (``anomalib_simsid.backbones.timm_pre_processor``); plain dicts and lists are walked.
    """
    if isinstance(spec, list):
        return [instantiate(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    if "class_path" not in spec:
        return {k: instantiate(v) for k, v in spec.items()}
    module_name, _, attr = spec["class_path"].rpartition(".")
    if not module_name:
        msg = f"class_path must be dotted (module.Name), got {spec['class_path']!r}"
        raise ValueError(msg)
    target = getattr(importlib.import_module(module_name), attr)
    return target(**{k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()})


# ----------------------------------------------------------------------------------------- metrics


def oracle_operating_point(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Accuracy and F1 at the threshold maximising accuracy on this very set (SimSID's reporting).

    Predicts "anomalous" for ``score >= threshold``; ties in accuracy go to the highest threshold,
    as iterating the ROC thresholds from the top does in the original evaluation code.
    """
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.int64)
    positives, n = int(y.sum()), len(y)
    tp = np.concatenate([[0], np.cumsum(y)])
    fp = np.concatenate([[0], np.cumsum(1 - y)])
    # Cut only between distinct scores: k images predicted anomalous, k in {0} + ends of tie runs.
    ks = np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1, [n]])
    tp_k, fp_k = tp[ks], fp[ks]
    accuracy = (tp_k + (n - positives - fp_k)) / n
    f1 = np.divide(2 * tp_k, 2 * tp_k + fp_k + (positives - tp_k), out=np.zeros(len(ks)), where=ks > 0)
    best = int(np.argmax(accuracy))
    threshold = float(s[ks[best] - 1]) if ks[best] > 0 else math.inf
    return {
        "oracle_accuracy": float(accuracy[best]),
        "oracle_F1": float(f1[best]),
        "oracle_threshold": threshold,
    }


def image_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC/AUPR (threshold-free), F1/accuracy at ``threshold`` (``score > threshold``), oracle point."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        msg = f"{int((~np.isfinite(scores)).sum())} test scores are not finite"
        raise FloatingPointError(msg)
    if set(np.unique(labels)) != {0, 1}:
        msg = "the test set needs normal and anomalous images for AUROC"
        raise ValueError(msg)
    out = {
        "image_AUROC": float(roc_auc_score(labels, scores)),
        "image_AUPR": float(average_precision_score(labels, scores)),
        "val_threshold": float(threshold),
    }
    if math.isfinite(threshold):
        pred = scores > threshold
        out["image_F1"] = float(f1_score(labels, pred, zero_division=0))
        out["image_accuracy"] = float(accuracy_score(labels, pred))
    else:
        out["image_F1"] = out["image_accuracy"] = math.nan
    out.update(oracle_operating_point(labels, scores))
    return out


# --------------------------------------------------------------------------------------------- job


def _log(job_id: str, message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] [{job_id}] {message}", flush=True)


def _progress_callback(job_id: str, job_dir: Path, prior_fit_s: float, history: list[dict[str, Any]]) -> Any:
    """Lightning callback: one log line per ~10 % of an epoch and per validation; progress.json."""
    from lightning.pytorch import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.epoch_start = self.start

        def elapsed(self) -> float:
            return prior_fit_s + time.perf_counter() - self.start

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.epoch_start = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            total = trainer.num_training_batches
            step = max(1, int(total) // 10) if math.isfinite(total) else 10
            if (batch_idx + 1) % step == 0 or batch_idx + 1 == total:
                rate = (batch_idx + 1) * len(batch.image) / (time.perf_counter() - self.epoch_start)
                _log(
                    job_id, f"epoch {trainer.current_epoch} batch {batch_idx + 1}/{total} ({rate:.1f} img/s)"
                )

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            metrics = {
                k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("image_")
            }
            _log(job_id, f"epoch {trainer.current_epoch} validated {metrics}, fit {self.elapsed():.0f} s")
            state = {
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "fit_s": self.elapsed(),
            }
            history.append({**state, **metrics})
            (job_dir / "progress.json").write_text(json.dumps({**state, "history": history}))

    return Progress()


def _device_name(accelerator: str) -> str:
    if accelerator in {"gpu", "cuda"}:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _raw_scores(model: Any, loader: Any, device: Any) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """Raw per-image scores: pre-processor transform then the torch model, as anomalib's test step does."""
    import torch

    transform = getattr(model.pre_processor, "transform", None) if model.pre_processor else None
    scores, labels, paths = [], [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            image = batch.image.to(device)
            if transform is not None:
                image = transform(image)
            output = model.model(image)
            score = output.pred_score
            if score is None:
                score = torch.amax(output.anomaly_map, dim=(-2, -1))
            scores.append(score.detach().float().reshape(-1).cpu().numpy())
            labels.append(batch.gt_label.reshape(-1).cpu().numpy())
            paths.extend(str(p) for p in batch.image_path)
    return np.concatenate(scores), np.concatenate(labels), paths, time.perf_counter() - start


def _latency_ms(model: Any, dataset: Any, count: int, device: Any) -> float:
    """Median wall time of the deployable forward (pre-processing, model, post-processing) at batch 1."""
    import torch

    count = min(count, len(dataset))
    if count == 0:
        return math.nan
    times = []
    with torch.inference_mode():
        for i in range(count + 2):
            image = dataset[i % len(dataset)].image[None].to(device)
            start = time.perf_counter()
            model(image)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:  # two warm-up calls
                times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _relative(path: str, root: Any) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(str(root)).resolve()))
    except (ValueError, OSError):
        return Path(path).name


def run_job(job: Job) -> dict[str, Any]:
    """Fit and score one (model, dataset, seed); writes ``result.json`` and ``scores.csv`` in the job dir."""
    import torch
    from anomalib.callbacks.checkpoint import ModelCheckpoint
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    job_dir = Path(job.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = job.model
    _log(job.job_id, f"start: {spec['class_path']} {spec['init_args']} max_epochs={spec['max_epochs']}")
    started = time.perf_counter()
    if job.torch_threads:
        torch.set_num_threads(int(job.torch_threads))
    seed_everything(job.seed, workers=True, verbose=False)
    datamodule = instantiate({"class_path": job.dataset["class_path"], "init_args": job.dataset["init_args"]})
    model = instantiate({"class_path": spec["class_path"], "init_args": spec["init_args"]})

    ckpt_dir = job_dir / "checkpoints"
    select_best = spec["select"] == "best_val_auroc"
    if select_best:
        checkpoint = ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best-{epoch}-{step}",
            monitor="image_AUROC",
            mode="max",
            save_top_k=1,
            save_last=True,
        )
    elif spec["checkpoint"]:
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True)
    else:  # nothing on disk (PaDiM's checkpoint alone is ~170 MB)
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=False)
    last = ckpt_dir / "last.ckpt"
    resume_from = str(last) if job.resume and last.is_file() else None
    prior_fit_s, history = 0.0, []
    if resume_from and (job_dir / "progress.json").is_file():
        progress = json.loads((job_dir / "progress.json").read_text())
        prior_fit_s, history = float(progress["fit_s"]), progress.get("history", [])
        _log(job.job_id, f"resuming from {last} (fit so far {prior_fit_s:.0f} s)")
    elif ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)

    trainer_args = {"enable_progress_bar": False, "enable_model_summary": False, **spec["trainer"]}
    engine = Engine(
        accelerator=job.accelerator,
        devices=1,
        max_epochs=spec["max_epochs"],
        default_root_dir=job_dir / "lightning",
        logger=False,
        callbacks=[checkpoint, _progress_callback(job.job_id, job_dir, prior_fit_s, history)],
        **trainer_args,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    fit_start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule, ckpt_path=resume_from)
    fit_s = prior_fit_s + time.perf_counter() - fit_start
    trainer = engine.trainer
    epochs_run, global_step, max_epochs = trainer.current_epoch, trainer.global_step, trainer.max_epochs

    selected_epoch, selected_step, best_val = math.nan, math.nan, math.nan
    if select_best:
        if not checkpoint.best_model_path:
            msg = "select=best_val_auroc but no checkpoint was saved (did any validation run?)"
            raise RuntimeError(msg)
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
        selected_epoch, selected_step = int(state["epoch"]), int(state["global_step"])
        best_val = float(checkpoint.best_model_score)
        _log(
            job.job_id, f"testing epoch {selected_epoch} step {selected_step} (best val AUROC {best_val:.4f})"
        )

    device = torch.device(
        "cuda" if job.accelerator in {"gpu", "cuda"} and torch.cuda.is_available() else "cpu"
    )
    model = model.to(device).eval()
    scores, labels, paths, test_s = _raw_scores(model, datamodule.test_dataloader(), device)
    threshold = float(model.post_processor.image_threshold) if model.post_processor else math.nan
    metrics = image_metrics(labels, scores, threshold)
    latency = _latency_ms(model, datamodule.test_data, job.latency_images, device)

    root = job.dataset["init_args"].get("root", "")
    pd.DataFrame(
        {
            "dataset": job.dataset["name"],
            "model": spec["name"],
            "seed": job.seed,
            "image": [_relative(p, root) for p in paths],
            "label": labels.astype(int),
            "score": scores,
        }
    ).to_csv(job_dir / "scores.csv", index=False, float_format="%.7g")

    result = {
        "dataset": job.dataset["name"],
        "model": spec["name"],
        "seed": job.seed,
        **metrics,
        "n_train": len(datamodule.train_data),
        "n_val": len(datamodule.val_data),
        "n_test": len(labels),
        "n_test_anomalous": int(labels.sum()),
        "max_epochs": max_epochs,
        "epochs_run": epochs_run,
        "global_steps": global_step,
        "selected_epoch": selected_epoch,
        "selected_step": selected_step,
        "best_val_AUROC": best_val,
        "fit_s": fit_s,
        "test_s": test_s,
        "test_images_per_s": len(labels) / test_s if test_s > 0 else math.nan,
        "latency_ms": latency,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else math.nan,
        "job_s": time.perf_counter() - started,
        "resumed": resume_from is not None,
        "val_history": json.dumps(history),
        "accelerator": job.accelerator,
        "device": _device_name(job.accelerator),
        "torch_threads": torch.get_num_threads(),
        "settings": spec["settings"],
        "spec_hash": job.spec_hash,
    }
    (job_dir / "result.json").write_text(json.dumps(result, indent=1, default=float))
    if ckpt_dir.exists():  # results are saved; multi-hundred-MB checkpoints are not worth keeping
        shutil.rmtree(ckpt_dir)
    _log(
        job.job_id,
        f"done: AUROC {metrics['image_AUROC']:.4f}, F1 {metrics['image_F1']:.4f}, fit {fit_s:.0f} s, "
        f"latency {latency:.1f} ms",
    )
    return result


def _job_child(job_file: str) -> int:
    """Subprocess entry: run one job; on failure write ``error.txt`` and exit 1."""
    job = Job(**json.loads(Path(job_file).read_text()))
    try:
        run_job(job)
    except Exception:
        Path(job.job_dir, "error.txt").write_text(traceback.format_exc())
        _log(job.job_id, "FAILED:\n" + traceback.format_exc())
        return 1
    return 0


def _finished(job: Job) -> dict[str, Any] | None:
    path = Path(job.job_dir) / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("spec_hash") == job.spec_hash else None


def execute(job: Job, inline: bool, env: dict[str, str], timeout_s: float | None) -> dict[str, Any]:
    """Run one job in a subprocess (or inline); raise ``RuntimeError`` with the cause on failure."""
    job_dir = Path(job.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "error.txt"):
        (job_dir / stale).unlink(missing_ok=True)
    if inline:
        try:
            return run_job(job)
        except Exception as err:
            (job_dir / "error.txt").write_text(traceback.format_exc())
            raise RuntimeError(f"{type(err).__name__}: {err}") from err
    job_file = job_dir / "job.json"
    job_file.write_text(json.dumps(asdict(job), indent=1))
    command = [sys.executable, "-m", "benchmarks.suite", "--run-job", str(job_file)]
    try:
        rc = subprocess.run(command, env=env, timeout=timeout_s, check=False).returncode
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"timed out after {timeout_s} s") from err
    result = _finished(job)
    if rc != 0 or result is None:
        error = job_dir / "error.txt"
        last_line = error.read_text().strip().splitlines()[-1] if error.is_file() else "no error.txt"
        raise RuntimeError(f"exit code {rc}: {last_line}")
    return result


# ------------------------------------------------------------------------------------------ report


def _fmt(values: pd.Series, scale: float = 100.0, digits: int = 1) -> str:
    values = values.dropna() * scale
    if values.empty:
        return "n/a"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def summary_table(results: pd.DataFrame, dataset: str, models: Sequence[str]) -> str:
    """Markdown: one row per model, mean ± sample std (ddof=1) over seeds, percentages."""
    head = (
        "| model | seeds | AUROC | AUPR | F1 @val thr | Acc @val thr | Acc (oracle) | F1 (oracle) "
        "| epochs run / max | tested checkpoint | fit time | test img/s | latency (ms/img, b=1) "
        "| peak RSS (MB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for name in models:
        r = results[(results.dataset == dataset) & (results.model == name)]
        if r.empty:
            continue
        epochs = f"{'/'.join(sorted({str(int(e)) for e in r.epochs_run}))} / {int(r.max_epochs.max())}"
        tested = "; ".join(
            f"epoch {int(x.selected_epoch)} step {int(x.selected_step)} "
            f"(val AUROC {100 * x.best_val_AUROC:.1f})"
            for x in r.itertuples()
            if "selected_step" in r and math.isfinite(x.selected_step)
        )
        rows.append(
            f"| {name} | {len(r)} ({', '.join(str(s) for s in sorted(r.seed))}) | **{_fmt(r.image_AUROC)}** "
            f"| {_fmt(r.image_AUPR)} | {_fmt(r.image_F1)} | {_fmt(r.image_accuracy)} "
            f"| {_fmt(r.oracle_accuracy)} "
            f"| {_fmt(r.oracle_F1)} | {epochs} | {tested or 'last'} | {_duration(float(r.fit_s.mean()))} "
            f"| {r.test_images_per_s.mean():.1f} | {r.latency_ms.mean():.0f} | {r.peak_rss_mb.max():.0f} |"
        )
    return head + "\n".join(rows) + "\n"


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

    models = [m for m in models if not scores[(scores.dataset == dataset) & (scores.model == m)].empty]
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 6))
    for i, name in enumerate(models):
        sub = scores[(scores.dataset == dataset) & (scores.model == name)]
        res = results[(results.dataset == dataset) & (results.model == name)]
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
    fig.savefig(out / f"roc_{_safe(dataset)}.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        sub = scores[(scores.dataset == dataset) & (scores.model == name)]
        seed = sorted(sub.seed.unique())[0]
        sub = sub[sub.seed == seed]
        res = results[(results.dataset == dataset) & (results.model == name) & (results.seed == seed)].iloc[0]
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
    fig.savefig(out / f"hist_{_safe(dataset)}.png", dpi=110)
    plt.close(fig)


def write_report(config: dict[str, Any], out: Path, run_info: dict[str, Any], failures: list[str]) -> None:
    """``summary.md`` and the PNGs from ``results.csv``/``scores.csv`` in ``out``."""
    results = pd.read_csv(out / "results.csv") if (out / "results.csv").is_file() else pd.DataFrame()
    scores = pd.read_csv(out / "scores.csv") if (out / "scores.csv").is_file() else pd.DataFrame()
    models = [m.name for m in config["models"]]
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
        + (f"; torch threads per job: {config['torch_threads']}" if config["torch_threads"] else ""),
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
        lines += [
            f"* Reused with --resume from an earlier invocation (same settings hash): "
            f"{', '.join(f'{x.model} seed {x.seed}' for x in reused.itertuples())}",
            "",
        ]
    if failures:
        lines += ["## FAILED jobs", "", *[f"* {f}" for f in failures], ""]
    for data in config["datasets"]:
        lines += [f"## {data.name}", "", "Measured by this suite:", ""]
        lines.append(summary_table(results, data.name, models) if not results.empty else "(no results)\n")
        pub = published_table(config["published"], data.name)
        if pub:
            lines += ["Published (not measured here; other code, splits and budgets):", "", pub]
        lines += ["Settings:", ""]
        for m in config["models"]:
            seeds = m.seeds if m.seeds is not None else config["seeds"]
            lines.append(
                f"* **{m.name}** (`{m.class_path}`, max_epochs {m.max_epochs}, select {m.select}, "
                f"seeds {seeds}): "
                f"{m.settings or json.dumps(m.init_args)}"
            )
        lines.append("")
        if not scores.empty and not scores[scores.dataset == data.name].empty:
            plot_dataset(scores, results, data.name, models, out)
            lines += [
                f"![ROC]({'roc_' + _safe(data.name)}.png)",
                "",
                f"![scores]({'hist_' + _safe(data.name)}.png)",
                "",
            ]
    if config["notes"]:
        lines += ["## Notes", "", *[f"* {n}" for n in config["notes"]], ""]
    (out / "summary.md").write_text("\n".join(lines))


# -------------------------------------------------------------------------------------------- main


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
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _install_backbones(config: dict[str, Any]) -> None:
    """Install the config's offline backbones into ``HF_HUB_CACHE`` when missing (idempotent)."""
    if not config["backbones"]:
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="suite YAML (benchmarks/configs/*.yaml)")
    parser.add_argument("--output-dir", type=Path, help="override the config's output_dir")
    parser.add_argument("--work-dir", type=Path, help="override the config's work_dir")
    parser.add_argument(
        "--resume", action="store_true", help="reuse finished jobs and last.ckpt of unfinished ones"
    )
    parser.add_argument(
        "--inline", action="store_true", help="run jobs in this process (no per-job isolation)"
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
        "device": _device_name(config["accelerator"]),
        "torch": version("torch"),
        "anomalib": version("anomalib"),
        "python": platform.python_version(),
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inline": args.inline,
    }


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM -> KeyboardInterrupt: ``subprocess.run`` then kills the job process before re-raising."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; 0 only if every job succeeded."""
    args = _parser().parse_args(argv)
    if args.run_job:
        return _job_child(args.run_job)
    if args.config is None:
        _parser().error("--config is required")
    config = load_config(args.config)
    if args.output_dir:
        config["output_dir"] = str(args.output_dir)
    if args.work_dir:
        config["work_dir"] = str(args.work_dir)
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        info = json.loads((out / "run.json").read_text())
        write_report(config, out, info, info.get("failures", []))
        return 0

    env = _prepare_env(config)
    signal.signal(signal.SIGTERM, _interrupt)  # so `kill <suite pid>` also ends the running job's process
    started = time.perf_counter()
    info = _run_info(args, config)
    _install_backbones(config)
    jobs = expand_jobs(config, resume=args.resume)
    print(f"{len(jobs)} jobs: {', '.join(j.job_id for j in jobs)}", flush=True)
    results, failures = [], []
    for index, job in enumerate(jobs, 1):
        done = _finished(job) if args.resume else None
        if done is not None:
            print(f"[{index}/{len(jobs)}] {job.job_id}: reusing finished result", flush=True)
            results.append({**done, "reused": True})
            continue
        print(f"[{index}/{len(jobs)}] {job.job_id}", flush=True)
        try:
            results.append(execute(job, args.inline, env, args.job_timeout))
        except RuntimeError as err:
            failures.append(f"{job.job_id}: {err}")
            print(f"[{index}/{len(jobs)}] {job.job_id} FAILED: {err}", flush=True)
            if args.fail_fast:
                break

    frame = pd.DataFrame(results)
    if not frame.empty:
        frame.to_csv(out / "results.csv", index=False)
        score_files = [Path(j.job_dir) / "scores.csv" for j in jobs]
        pd.concat([pd.read_csv(p) for p in score_files if p.is_file() and _finished_ok(p, results)]).to_csv(
            out / "scores.csv", index=False, float_format="%.7g"
        )
    info.update(
        wall_s=time.perf_counter() - started,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        load_end=" ".join(f"{x:.1f}" for x in os.getloadavg()),
        failures=failures,
        config=str(args.config),
    )
    (out / "run.json").write_text(json.dumps(info, indent=1, default=str))
    write_report(config, out, info, failures)
    print(f"wrote {out}/results.csv, scores.csv, summary.md", flush=True)
    if failures:
        print(
            f"{len(failures)} of {len(jobs)} jobs FAILED:\n  " + "\n  ".join(failures),
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


def _finished_ok(scores_file: Path, results: list[dict[str, Any]]) -> bool:
    """Only the scores of jobs whose result is part of this run."""
    done = Path(scores_file).parent / "result.json"
    return done.is_file() and any(
        json.loads(done.read_text())["spec_hash"] == r["spec_hash"] for r in results
    )


if __name__ == "__main__":
    raise SystemExit(main())
