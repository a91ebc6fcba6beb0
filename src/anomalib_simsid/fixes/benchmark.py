"""Fixes of ``anomalib benchmark`` for grids holding SimSID: every row, nested class paths, seeds.

``benchmark_results``: ``anomalib benchmark`` of a grid holding SimSID keeps every job's row.

anomalib 2.7's ``BenchmarkJob.collect`` builds its table from the keys of the *first* job's result.
A grid of different models (PaDiM, PatchCore, SimSID: each with its own ``model.init_args.*``) has
different keys per job, so collecting raised ``KeyError 'model.init_args.max_epochs'`` or pandas'
"All arrays must be of the same length", no ``results.csv`` was written, and ``Pipeline.run``
swallowed that and every failed job: the command exited 0 however little ran.

For a benchmark whose grid holds SimSID (any model ``class_path`` naming SimSID or a subclass), the
table is the union of every result's columns (a model's own arguments are empty in the others'
rows), and the command exits 1 naming the log when no job succeeded. Other grids run anomalib's
code unchanged.

``benchmark_class_paths``: a grid's model ``init_args`` reach the model as written: anomalib builds
only the model's own ``class_path``, so a nested one (an ``evaluator`` with the audit metrics, a
``pre_processor``) arrived as a dict and the job failed. In grids holding SimSID those are built first
(recursively, as ``anomalib train`` does from a config), so PaDiM's and PatchCore's rows can carry the audit's
matched AUROCs beside SimSID's.

``benchmark_seed``: the job generator builds each job's model before the job seeds (``BenchmarkJob.run``
calls ``seed_everything``), so the first job's model was initialised from an unseeded generator
(PaDiM's random channel draw, SimSID's weights) and every later one from what the previous job left:
two runs of one grid gave the first model different results, and a model's result depended on its
place in the grid. In grids holding SimSID each job's seed is set before its model is built.

Each finished job also lets go of its model and data: a job's model (trainer, engine) sits in
reference cycles, so without a collection its memory stays held while the next job trains (measured
for SimSID and PaDiM alike), and on a GPU the caching allocator keeps it reserved. SimSID's job
(47 M parameters, two Adam optimisers) is the largest of a grid; PatchCore's coreset, which may
need most of a 24 GB card, ran out beside it.
"""

from __future__ import annotations

import functools
import gc
import importlib
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

import pandas as pd
import torch

from .cli import names_simsid

_GRID = {"simsid": False}  # whether the running benchmark's grid names SimSID (set by track_grid)
_STATE = {"collected": 0}


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


def _has_class_path(value: Any) -> bool:
    if isinstance(value, dict):
        return "class_path" in value or any(_has_class_path(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_class_path(v) for v in value)
    return False


def build(spec: Any) -> Any:
    """Build ``{class_path, init_args}`` mappings inside out (dotted paths); other values as they are.

    ``class_path`` may name a class (``anomalib.models.Padim``) or a callable returning the object
    (``anomalib_simsid.backbones.timm_pre_processor``); plain dicts and lists are walked. The benchmark
    scripts use it too (``benchmarks.common.instantiate``).
    """
    if isinstance(spec, list):
        return [build(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    if "class_path" not in spec:
        return {k: build(v) for k, v in spec.items()}
    module, _, name = str(spec["class_path"]).rpartition(".")
    if not module:
        msg = f"class_path must be dotted (module.Name), got {spec['class_path']!r}"
        raise ValueError(msg)
    return getattr(importlib.import_module(module), name)(**build(dict(spec.get("init_args") or {})))


def get_model(original: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
    """Build a grid's model as anomalib's ``get_model`` does, its arguments' nested class paths first.

    The model class is resolved as anomalib resolves it (a bare name among the models, a dotted path
    only inside its allowed modules): only the arguments' treatment changes.
    """
    from anomalib.models import ALLOWED_MODULES, UnknownModelError, _get_model_class_by_name

    spec = dict(model) if isinstance(model, dict) else None
    if spec is None or not _has_class_path(spec.get("init_args") or {}):
        return original(model, *args, **kwargs)
    module, _, name = str(spec["class_path"]).rpartition(".")
    if module and module not in ALLOWED_MODULES:
        return original(model, *args, **kwargs)  # anomalib's refusal, as without the fix
    try:
        found = getattr(importlib.import_module(module), name) if module else _get_model_class_by_name(name)
    except AttributeError as err:
        raise UnknownModelError(spec["class_path"]) from err
    return found(*args, **{**build(dict(spec["init_args"])), **kwargs})


def release(job: Any) -> None:
    """Drop a finished job's model and data, collect the cycles that hold them, empty the CUDA cache."""
    job.model = job.datamodule = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def apply_benchmark_results(module: ModuleType) -> None:
    """Wrap ``Benchmark._setup_runners`` and ``run``, ``BenchmarkJob.collect`` and ``run``."""
    from anomalib.pipelines.benchmark.job import BenchmarkJob

    track_grid(module)
    benchmark = module.Benchmark
    original_collect = BenchmarkJob.collect
    original_run = benchmark.run

    @functools.wraps(original_collect)
    def _collect(results: list[dict[str, Any]]) -> pd.DataFrame:
        if not _GRID["simsid"]:
            return original_collect(results)
        return collect(results)

    original_job_run = BenchmarkJob.run

    @functools.wraps(original_job_run)
    def job_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _GRID["simsid"]:
            return original_job_run(self, *args, **kwargs)
        try:
            return original_job_run(self, *args, **kwargs)
        finally:
            release(self)

    @functools.wraps(original_run)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        _GRID["simsid"], _STATE["collected"] = False, 0
        result = original_run(self, *args, **kwargs)
        if _GRID["simsid"] and _STATE["collected"] == 0:
            msg = "anomalib benchmark: no job succeeded, no results written (see runs/pipeline.log)"
            raise SystemExit(msg)
        return result

    BenchmarkJob.run = job_run
    BenchmarkJob.collect = staticmethod(_collect)
    benchmark.run = run


def track_grid(module: ModuleType) -> None:
    """Wrap ``Benchmark._setup_runners`` once (for every fix here): note whether the grid names SimSID."""
    benchmark = module.Benchmark
    setup_runners = benchmark._setup_runners
    if getattr(setup_runners, "_tracks_simsid_grid", False):
        return

    @functools.wraps(setup_runners)
    def _setup_runners(args: dict) -> Any:
        _GRID["simsid"] = holds_simsid(args)
        return setup_runners(args)

    _setup_runners._tracks_simsid_grid = True  # type: ignore[attr-defined]
    benchmark._setup_runners = staticmethod(_setup_runners)


def apply_benchmark_class_paths(module: ModuleType) -> None:
    """Wrap the job generator's ``get_model``: nested class paths built first in SimSID grids."""
    from anomalib.pipelines.benchmark import generator

    track_grid(module)
    original_get_model = generator.get_model

    @functools.wraps(original_get_model)
    def _get_model(model: Any, *args: Any, **kwargs: Any) -> Any:
        if not _GRID["simsid"]:
            return original_get_model(model, *args, **kwargs)
        return get_model(original_get_model, model, *args, **kwargs)

    generator.get_model = _get_model


def seeded(containers: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield each job's settings after seeding with its ``seed``: its model is built right after."""
    from lightning.pytorch import seed_everything

    for container in containers:
        if container.get("seed") is not None:
            seed_everything(int(container["seed"]), verbose=False)
        yield container


def apply_benchmark_seed(module: ModuleType) -> None:
    """Wrap the job generator's grid iterator: each job seeded before its model is built (SimSID grids)."""
    from anomalib.pipelines.benchmark import generator

    track_grid(module)
    grid_iterator = generator.get_iterator_from_grid_dict

    @functools.wraps(grid_iterator)
    def _grid_iterator(args: dict) -> Any:
        containers = grid_iterator(args)
        return seeded(containers) if _GRID["simsid"] else containers

    generator.get_iterator_from_grid_dict = _grid_iterator
