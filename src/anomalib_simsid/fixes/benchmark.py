"""The ``benchmark_results`` fix: ``anomalib benchmark`` of a grid holding SimSID keeps every job's row.

anomalib 2.7's ``BenchmarkJob.collect`` builds its table from the keys of the *first* job's result.
A grid of different models (PaDiM, PatchCore, SimSID: each with its own ``model.init_args.*``) has
different keys per job, so collecting raised ``KeyError 'model.init_args.max_epochs'`` or pandas'
"All arrays must be of the same length", no ``results.csv`` was written, and ``Pipeline.run``
swallowed that and every failed job: the command exited 0 however little ran.

For a benchmark whose grid holds SimSID (any model ``class_path`` naming SimSID or a subclass), the
table is the union of every result's columns (a model's own arguments are empty in the others'
rows), and the command exits 1 naming the log when no job succeeded. Other grids run anomalib's
code unchanged.

Each finished job also lets go of its model and data: a job's model (trainer, engine) sits in
reference cycles, so without a collection its memory stays held while the next job trains (measured
for SimSID and PaDiM alike), and on a GPU the caching allocator keeps it reserved. SimSID's job
(47 M parameters, two Adam optimisers) is the largest of a grid; PatchCore's coreset, which may
need most of a 24 GB card, ran out beside it.
"""

from __future__ import annotations

import functools
import gc
from types import ModuleType
from typing import Any

import pandas as pd
import torch

from .cli import names_simsid

_STATE = {"simsid_grid": False, "collected": 0}


def holds_simsid(config: Any) -> bool:
    """Whether a benchmark config (nested dicts and grids) names SimSID as a model anywhere."""
    if isinstance(config, dict):
        model = config.get("model")
        if model is not None and _model_names_simsid(model):
            return True
        return any(holds_simsid(value) for key, value in config.items() if key != "model")
    if isinstance(config, list):
        return any(holds_simsid(value) for value in config)
    return False


def _model_names_simsid(model: Any) -> bool:
    if isinstance(model, str):
        return names_simsid(model)
    if isinstance(model, list):
        return any(_model_names_simsid(item) for item in model)
    if isinstance(model, dict):
        return any(_model_names_simsid(model[key]) for key in ("class_path", "grid") if key in model)
    return False


def collect(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Every job's row, the union of their columns, in the order the jobs ran (none: an error)."""
    _STATE["collected"] = len(results)
    if not results:
        msg = "no benchmark job succeeded"
        raise RuntimeError(msg)
    return pd.DataFrame(results)


def release(job: Any) -> None:
    """Drop a finished job's model and data, collect the cycles that hold them, empty the CUDA cache."""
    job.model = job.datamodule = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def apply_benchmark_results(module: ModuleType) -> None:
    """Wrap ``Benchmark._setup_runners`` and ``run``, ``BenchmarkJob.collect`` and ``run``."""
    from anomalib.pipelines.benchmark.job import BenchmarkJob

    benchmark = module.Benchmark
    setup_runners = benchmark._setup_runners
    original_collect = BenchmarkJob.collect
    original_run = benchmark.run

    @functools.wraps(setup_runners)
    def _setup_runners(args: dict) -> Any:
        _STATE["simsid_grid"] = holds_simsid(args)
        return setup_runners(args)

    @functools.wraps(original_collect)
    def _collect(results: list[dict[str, Any]]) -> pd.DataFrame:
        if not _STATE["simsid_grid"]:
            return original_collect(results)
        return collect(results)

    original_job_run = BenchmarkJob.run

    @functools.wraps(original_job_run)
    def job_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _STATE["simsid_grid"]:
            return original_job_run(self, *args, **kwargs)
        try:
            return original_job_run(self, *args, **kwargs)
        finally:
            release(self)

    @functools.wraps(original_run)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        _STATE.update(simsid_grid=False, collected=0)
        result = original_run(self, *args, **kwargs)
        if _STATE["simsid_grid"] and _STATE["collected"] == 0:
            msg = "anomalib benchmark: no job succeeded, no results written (see runs/pipeline.log)"
            raise SystemExit(msg)
        return result

    BenchmarkJob.run = job_run
    benchmark._setup_runners = staticmethod(_setup_runners)
    BenchmarkJob.collect = staticmethod(_collect)
    benchmark.run = run
