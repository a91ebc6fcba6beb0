"""One benchmark job: set up, fit, test each selected checkpoint, write; in a subprocess or inline."""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.audit.baselines import StatisticBaseline
from benchmarks.common import device_name, instantiate, iter_outputs, run_module, write_text_atomic
from benchmarks.suite.config import Job, ModelSpec
from benchmarks.suite.metrics import image_metrics


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
            if trainer.sanity_checking:
                return
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
            write_text_atomic(job_dir / "progress.json", json.dumps({**state, "history": history}))

    return Progress()


def _raw_scores(
    model: Any, loader: Any, device: Any, readouts: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str], float]:
    """Raw per-image scores under each read-out (see ``READOUTS``) and the labels, in one pass."""
    import torch

    scores: dict[str, list[np.ndarray]] = {r: [] for r in readouts}
    labels, paths = [], []
    start = time.perf_counter()
    for batch, output in iter_outputs(model, loader, device):
        for readout in readouts:
            if readout == "mean":
                score = torch.mean(output.anomaly_map.float(), dim=(-2, -1))
            else:
                score = output.pred_score
                if score is None:
                    score = torch.amax(output.anomaly_map, dim=(-2, -1))
            scores[readout].append(score.detach().float().reshape(-1).cpu().numpy())
        labels.append(batch.gt_label.reshape(-1).cpu().numpy())
        paths.extend(str(p) for p in batch.image_path)
    joined = {r: np.concatenate(s) for r, s in scores.items()}
    return joined, np.concatenate(labels), paths, time.perf_counter() - start


def _latency_ms(model: Any, dataset: Any, count: int, device: Any) -> float:
    """Median wall time of the deployable forward (pre-processing, model, post-processing) at batch 1.

    Timed by hand rather than with ``torch.utils.benchmark.Timer``: each call gets a different image,
    end to end through anomalib's post-processing, as a deployed model sees them.
    """
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


def _checkpoint_callback(spec: ModelSpec, ckpt_dir: Path, keep: bool) -> Any:
    """``best-*.ckpt`` by validation AUROC when selecting by it; ``last.ckpt`` to resume or to keep."""
    from anomalib.callbacks.checkpoint import ModelCheckpoint

    save_last = spec.checkpoint or keep or "best_val_auroc" in spec.selects
    if "best_val_auroc" in spec.selects:
        return ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best-{epoch}-{step}",
            monitor="image_AUROC",
            mode="max",
            save_top_k=1,
            save_last=save_last,
        )
    # Otherwise nothing on disk unless asked (PaDiM's checkpoint alone is ~170 MB).
    return ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=save_last)


@dataclass
class _Fitted:
    """What testing needs from one training run."""

    model: Any
    datamodule: Any
    checkpoint: Any
    last: Path
    history: list[dict[str, Any]]
    common: dict[str, Any]  # the columns every result row of this run shares


def _setup(job: Job, spec: ModelSpec) -> tuple[Any, Any]:
    """Seed, set threads, build the datamodule and the model from their class paths."""
    import torch
    from lightning.pytorch import seed_everything

    if job.torch_threads:
        torch.set_num_threads(int(job.torch_threads))
    seed_everything(job.seed, workers=True, verbose=False)
    datamodule = instantiate({"class_path": job.dataset["class_path"], "init_args": job.dataset["init_args"]})
    return datamodule, instantiate({"class_path": spec.class_path, "init_args": spec.init_args})


def _common(job: Job, spec: ModelSpec, datamodule: Any, **run: Any) -> dict[str, Any]:
    """Columns every result row of a job shares: identity, sizes, training budget and device."""
    import torch

    return {
        "dataset": job.dataset["name"],
        "model": spec.name,
        "seed": job.seed,
        "n_train": len(datamodule.train_data),
        "n_val": len(datamodule.val_data),
        **run,
        "accelerator": job.accelerator,
        "device": device_name(job.accelerator),
        "torch_threads": torch.get_num_threads(),
        "settings": spec.settings,
        "spec_hash": job.spec_hash,
    }


def _fit(job: Job, spec: ModelSpec, datamodule: Any, model: Any) -> _Fitted:
    """Fit with validation at every epoch end, resuming from ``last.ckpt`` when asked and present."""
    import torch
    from anomalib.engine import Engine

    job_dir = Path(job.job_dir)
    ckpt_dir = job_dir / "checkpoints"
    checkpoint = _checkpoint_callback(spec, ckpt_dir, job.keep_checkpoints)
    last = ckpt_dir / "last.ckpt"
    resume_from = str(last) if job.resume and last.is_file() else None
    prior_fit_s, history = 0.0, []
    if resume_from and (job_dir / "progress.json").is_file():
        progress = json.loads((job_dir / "progress.json").read_text())
        prior_fit_s, history = float(progress["fit_s"]), progress.get("history", [])
        _log(job.job_id, f"resuming from {last} (fit so far {prior_fit_s:.0f} s)")
    elif ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)

    # Validation closes every epoch (check_val_every_n_epoch 1; load_config refuses other values).
    trainer_args = {
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "check_val_every_n_epoch": 1,
        **spec.trainer,
    }
    callbacks = [checkpoint, _progress_callback(job.job_id, job_dir, prior_fit_s, history)]
    if spec.curves:
        from anomalib_simsid.models.simsid.adapters.score_curves import ScoreCurves

        callbacks.append(
            ScoreCurves(job_dir / "curves.csv", every_n_epochs=1, per_image_path=job_dir / "per_image.csv")
        )
    engine = Engine(
        accelerator=job.accelerator,
        devices=1,
        max_epochs=spec.max_epochs,
        default_root_dir=job_dir / "lightning",
        logger=False,
        callbacks=callbacks,
        **trainer_args,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    fit_start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule, ckpt_path=resume_from)
    trainer = engine.trainer
    if job.keep_checkpoints:  # the true last state (a max_time stop can fall between epoch ends)
        trainer.save_checkpoint(last)
    common = _common(
        job, spec, datamodule,
        max_epochs=trainer.max_epochs,
        max_time=str(spec.trainer.get("max_time", "")),
        epochs_run=trainer.current_epoch,
        global_steps=trainer.global_step,
        fit_s=prior_fit_s + time.perf_counter() - fit_start,
        resumed=resume_from is not None,
        val_history=json.dumps(history),
    )  # fmt: skip
    return _Fitted(model, datamodule, checkpoint, last, history, common)


def _select(job: Job, run: _Fitted, select: str) -> dict[str, Any]:
    """Put the model of ``select`` in place ("last": as trained; else the best checkpoint from disk)."""
    import torch

    if select == "last":
        return {
            "selected_epoch": run.common["epochs_run"] - 1,
            "selected_step": run.common["global_steps"],
            "selected_val_AUROC": run.history[-1].get("image_AUROC", math.nan) if run.history else math.nan,
            "checkpoint_path": str(run.last) if job.keep_checkpoints else "",
        }
    if not run.checkpoint.best_model_path:
        msg = "select=best_val_auroc but no checkpoint was saved (did any validation run?)"
        raise RuntimeError(msg)
    state = torch.load(run.checkpoint.best_model_path, map_location="cpu", weights_only=False)
    run.model.load_state_dict(state["state_dict"])
    return {
        "selected_epoch": int(state["epoch"]),
        "selected_step": int(state["global_step"]),
        "selected_val_AUROC": float(run.checkpoint.best_model_score),
        "checkpoint_path": run.checkpoint.best_model_path if job.keep_checkpoints else "",
    }


def _score_frame(
    job: Job, spec: ModelSpec, select: str, paths: list[str], labels: Any, scores: Any, readout: str = "score"
) -> pd.DataFrame:
    """Every test image's raw score; paths relative to the dataset root (``benchmarks.audit`` reads them)."""
    return pd.DataFrame({
        "dataset": job.dataset["name"],
        "model": spec.name,
        "entry": spec.entry(select, readout),
        "select": select,
        "seed": job.seed,
        "image": [_relative(p, job.dataset["init_args"].get("root", "")) for p in paths],
        "label": np.asarray(labels).astype(int),
        "score": scores,
    })  # fmt: skip


def _test(job: Job, spec: ModelSpec, run: _Fitted, select: str) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Score the test set with the model of ``select``: per read-out, one result row and the scores."""
    import torch

    selected = _select(job, run, select)
    _log(
        job.job_id,
        f"testing {select}: epoch {selected['selected_epoch']}, "
        f"val AUROC {selected['selected_val_AUROC']:.4f}",
    )
    device = torch.device(
        "cuda" if job.accelerator in {"gpu", "cuda"} and torch.cuda.is_available() else "cpu"
    )
    model = run.model.to(device).eval()
    loader = run.datamodule.test_dataloader()
    scores, labels, paths, test_s = _raw_scores(model, loader, device, spec.readouts)
    latency = _latency_ms(model, run.datamodule.test_data, job.latency_images, device)
    val_auroc = {}
    if len(spec.readouts) > 1:  # which read-out validation would pick: every read-out on the val split
        val_loader = run.datamodule.val_dataloader()
        val_scores, val_labels, _, _ = _raw_scores(model, val_loader, device, spec.readouts)
        val_auroc = {r: image_metrics(val_labels, v, math.nan)["image_AUROC"] for r, v in val_scores.items()}
    tested = []
    for readout, readout_scores in scores.items():
        # anomalib's validation threshold belongs to the model's own score, not to another read-out
        own = readout == "score" and model.post_processor
        threshold = float(model.post_processor.image_threshold) if own else math.nan
        metrics = image_metrics(labels, readout_scores, threshold)
        _log(
            job.job_id,
            f"{spec.entry(select, readout)}: AUROC {metrics['image_AUROC']:.4f}, "
            f"F1 {metrics['image_F1']:.4f}, fit {run.common['fit_s']:.0f} s, latency {latency:.1f} ms",
        )
        result = {
            **run.common,
            "entry": spec.entry(select, readout),
            "select": select,
            **metrics,
            "n_test": len(labels),
            "n_test_anomalous": int(labels.sum()),
            **selected,
            "test_s": test_s,
            "test_images_per_s": len(labels) / test_s if test_s > 0 else math.nan,
            "latency_ms": latency,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else math.nan,
            "readout_val_AUROC": val_auroc.get(readout, math.nan),
        }
        frame = _score_frame(job, spec, select, paths, labels, readout_scores, readout)
        tested.append((result, frame))
    return tested


def _untrained_row(
    job: Job, spec: ModelSpec, datamodule: Any, paths: list[str], labels: Any, scores: Any, test_s: float,
    fit_s: float = 0.0, epochs: int = 0, **extra: Any,
) -> tuple[dict[str, Any], pd.DataFrame]:  # fmt: skip
    """Build the result row and scores of a model scored outside anomalib (statistic, feature-space)."""
    metrics = image_metrics(labels, scores, math.nan)
    common = _common(
        job, spec, datamodule, max_epochs=epochs, max_time="", epochs_run=epochs, global_steps=0, fit_s=fit_s,
        resumed=False, val_history="[]",
    )  # fmt: skip
    result = {
        **common,
        "entry": spec.entry("last"),
        "select": "last",
        **metrics,
        "n_test": len(labels),
        "n_test_anomalous": int(labels.sum()),
        "selected_epoch": epochs - 1 if epochs else math.nan,
        "selected_step": math.nan,
        "selected_val_AUROC": math.nan,
        **extra,
        "test_s": test_s,
        "test_images_per_s": len(labels) / test_s if test_s > 0 else math.nan,
        "latency_ms": 1000 * test_s / max(len(labels), 1),  # feature-space: on cached features
        "checkpoint_path": "",
        "peak_cuda_mb": math.nan,
    }
    return result, _score_frame(job, spec, "last", paths, labels, scores)


def _statistic(
    job: Job, spec: ModelSpec, datamodule: Any, baseline: StatisticBaseline
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score the test set by a statistic baseline (no training; its sign chosen on validation)."""
    datamodule.prepare_data()
    datamodule.setup()
    val, test = datamodule.val_data.samples, datamodule.test_data.samples
    val_auroc = baseline.fit(list(val.image_path), val.label_index.to_numpy())
    start = time.perf_counter()
    scores = baseline.score(list(test.image_path))
    test_s = time.perf_counter() - start
    labels = test.label_index.to_numpy().astype(int)
    result, frame = _untrained_row(
        job, spec, datamodule, list(test.image_path), labels, scores, test_s,
        selected_val_AUROC=val_auroc, statistic_sign=baseline.sign,
    )  # fmt: skip
    _log(
        job.job_id,
        f"sign {baseline.sign:+.0f} (val AUROC {val_auroc:.4f}): test AUROC {result['image_AUROC']:.4f}",
    )
    return result, frame


def _feature(job: Job, spec: ModelSpec, datamodule: Any, model: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score the test set by a feature-space model (``benchmarks.features.suite``): cached features."""
    datamodule.prepare_data()
    datamodule.setup()
    root = str(job.dataset["init_args"].get("root", ""))
    test = datamodule.test_data.samples
    splits = {
        name: model.split(name, root, list(data.samples.image_path))
        for name, data in (("train", datamodule.train_data), ("test", datamodule.test_data))
    }
    fitted = model.fit(splits["train"], job.seed)
    start = time.perf_counter()
    scores = model.score(splits["test"])
    test_s = time.perf_counter() - start
    labels = test.label_index.to_numpy().astype(int)
    result, frame = _untrained_row(
        job, spec, datamodule, list(test.image_path), labels, scores, test_s,
        fit_s=fitted["fit_s"], epochs=fitted["epochs"], s_per_epoch=fitted["s_per_epoch"],
    )  # fmt: skip
    _log(job.job_id, f"{model.method}: fit {fitted['fit_s']:.0f} s, test AUROC {result['image_AUROC']:.4f}")
    return result, frame


def run_job(job: Job) -> list[dict[str, Any]]:
    """Fit one (model, dataset, seed) and test every selected checkpoint of that one run.

    Returns one result per checkpoint ("last" first: the model in memory when training stopped, then
    the best validation AUROC, loaded from disk) and writes them to ``result.json``; every test
    image's score goes to ``scores.csv``. A statistic baseline is not trained: one row, sign chosen
    on validation.
    """
    job_dir = Path(job.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(**job.model)
    _log(job.job_id, f"start: {spec.class_path} {spec.init_args} max_epochs={spec.max_epochs}")
    started = time.perf_counter()
    datamodule, model = _setup(job, spec)
    from benchmarks.features.suite import FeatureModel  # torch: only in the job's process

    if isinstance(model, StatisticBaseline):
        tested = [_statistic(job, spec, datamodule, model)]
    elif isinstance(model, FeatureModel):
        tested = [_feature(job, spec, datamodule, model)]
    else:
        run = _fit(job, spec, datamodule, model)
        tested = [row for select in spec.selects for row in _test(job, spec, run, select)]
    peak = {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "job_s": time.perf_counter() - started,
    }
    results = [{**result, **peak} for result, _ in tested]
    write_text_atomic(
        job_dir / "scores.csv",
        pd.concat([frame for _, frame in tested]).to_csv(index=False, float_format="%.7g"),
    )
    write_text_atomic(job_dir / "result.json", json.dumps(results, indent=1, default=float))
    ckpt_dir = job_dir / "checkpoints"
    if ckpt_dir.exists() and not job.keep_checkpoints:  # multi-hundred-MB files, scored already
        shutil.rmtree(ckpt_dir)
    return results


def job_child(job_file: str) -> int:
    """Subprocess entry: run one job; on failure write ``error.txt`` and exit 1."""
    job = Job(**json.loads(Path(job_file).read_text()))
    try:
        run_job(job)
    except Exception:
        write_text_atomic(Path(job.job_dir, "error.txt"), traceback.format_exc())
        _log(job.job_id, "FAILED:\n" + traceback.format_exc())
        return 1
    return 0


def finished(job: Job) -> list[dict[str, Any]] | None:
    """Return the results of an earlier run of exactly this job's settings, if it completed."""
    path = Path(job.job_dir) / "result.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    if isinstance(results, dict):  # one result per file, as written before several checkpoints were tested
        results = [results]
    return results if all(r.get("spec_hash") == job.spec_hash for r in results) else None


def execute(job: Job, inline: bool, env: dict[str, str], timeout_s: float | None) -> list[dict[str, Any]]:
    """Run one job in a subprocess (or inline); raise ``RuntimeError`` with the cause on failure."""
    job_dir = Path(job.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "error.txt"):
        (job_dir / stale).unlink(missing_ok=True)
    if inline:
        try:
            return run_job(job)
        except Exception as err:
            write_text_atomic(job_dir / "error.txt", traceback.format_exc())
            raise RuntimeError(f"{type(err).__name__}: {err}") from err
    job_file = job_dir / "job.json"
    write_text_atomic(job_file, json.dumps(asdict(job), indent=1))
    rc = run_module("benchmarks.suite", ["--run-job", str(job_file)], env=env, timeout_s=timeout_s).returncode
    results = finished(job)
    if rc != 0 or results is None:
        error = job_dir / "error.txt"
        last_line = error.read_text().strip().splitlines()[-1] if error.is_file() else "no error.txt"
        raise RuntimeError(f"exit code {rc}: {last_line}")
    return results
