"""Fixes of anomalib 2.7 behaviour that traps SimSID runs: one registry, each fix scoped to SimSID.

Every fix wraps one anomalib function and changes what it does only when the run's model is SimSID
(or a subclass): the CLI's model class path, or the model handed to ``Engine``. For any other
model the wrapper calls anomalib's function unchanged. Each entry of :data:`FIXES` says which bug,
what it did to SimSID runs, and how it is fixed; the README's "anomalib 2.7 fixes" table lists them.

Switches (environment variables, read when a fix is applied):

* ``ANOMALIB_SIMSID_NO_FIXES=1`` (or ``all``): no fix is applied; ``=name,name`` skips those fixes.
* ``ANOMALIB_SIMSID_NO_AUTOLOAD=1``: no autoload hook (bare ``--model SimSID`` stops resolving;
  use ``anomalib_simsid.SimSID``) and no fix either, also after ``import anomalib_simsid``.

The ``.pth`` autoload hook only triggers :func:`apply_pending` after the modules it patches have run
(:data:`anomalib_simsid_autoload.FIX_TARGETS`, the one list of them, with the attribute that exists
once each has finished importing); ``import anomalib_simsid`` calls it too. A fix that cannot be applied
warns and is skipped: a broken plugin must never break plain anomalib.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from anomalib_simsid_autoload import BENCHMARK, CLI, ENGINE, FIX_TARGETS

from . import benchmark, cli, engine

NO_FIXES = "ANOMALIB_SIMSID_NO_FIXES"
NO_AUTOLOAD = "ANOMALIB_SIMSID_NO_AUTOLOAD"


@dataclass(frozen=True)
class Fix:
    """One anomalib 2.7 fix: where it applies, and the README row that explains it."""

    name: str
    target: str  # the anomalib module whose function is wrapped (a key of FIX_TARGETS)
    apply: Callable[[ModuleType], None]  # called once with the target module
    bug: str
    effect: str
    fix: str


FIXES: tuple[Fix, ...] = (
    Fix(
        "cli_seed",
        CLI,
        cli.apply_seed,
        "`AnomalibCLI` parses `seed_everything` but never seeds.",
        "Two runs of one config trained different models.",
        "Seeds before the model and data are built: an int seeds with it, `true` draws a random seed, "
        "logs it and saves it in config.yaml, `false` skips.",
    ),
    Fix(
        "cli_output_root",
        CLI,
        cli.apply_output_root,
        "A relative logger `save_dir` or checkpoint `dirpath` is relative to the current folder.",
        "Logs and checkpoints landed in `./logs` whatever `--default_root_dir` said.",
        "Makes them relative to `default_root_dir` (absolute folders are kept).",
    ),
    Fix(
        "cli_short_errors",
        CLI,
        cli.apply_short_errors,
        "Every error ends the CLI with a 150-220 line traceback.",
        "A missing dataset root, a wrong option or a bad checkpoint was hard to find in it.",
        "User errors (missing, unreadable or read-only file or folder, foreign checkpoint, a model "
        "option the model refuses, an export argument SimSID cannot honour) print one line; "
        "`ANOMALIB_SIMSID_TRACEBACK=1` shows the traceback.",
    ),
    Fix(
        "checkpoint_check",
        ENGINE,
        engine.apply_checkpoint_check,
        "`--ckpt_path` is read by Lightning before any model hook.",
        "A truncated or foreign file gave a torch zip error that did not name the file.",
        "`fit/validate/test/train/predict/export` check the checkpoint first: one error naming the file.",
    ),
    Fix(
        "resume_test",
        ENGINE,
        engine.apply_resume_test,
        "`Engine.train(ckpt_path=X)` tests `X` again after fitting from it.",
        "A resumed `anomalib train` reported the test metrics of the checkpoint it resumed from.",
        "The test after fitting runs on the trained model.",
    ),
    Fix(
        "run_folders",
        ENGINE,
        engine.apply_run_folders,
        "`fit/train` make a new `v<n>`, logger `version_<n>` and `latest` before the run can fail; "
        "a resumed run gets new ones; `predict` writes into `latest` (the last run's folder).",
        "Failed runs (and `anomalib fit`) left empty folders and `latest` on them; one training's "
        "metrics and checkpoints were split over two folders after a resume; a second predict "
        "overwrote the first's predictions.csv and piled its overlays onto the first's.",
        "A run (failed, or a fit that wrote nothing there) removes the folders it left empty and puts "
        "`latest` back (a failed run that saved checkpoints keeps it); a resumed run writes into the "
        "folders of the run it resumes; every predict gets a `v<n>` of its own, created race-free "
        "(concurrent runs each get theirs); under DDP only rank 0 manages the folders.",
    ),
    Fix(
        "predict_reader",
        ENGINE,
        engine.apply_predict_reader,
        "`PredictDataset` lists torchvision's raster suffixes and reads with PIL as 8-bit RGB.",
        "`anomalib predict --data <folder>` found no DICOM and scored 16-bit PNGs clipped to white.",
        "For SimSID, `Engine.predict(data_path=...)` lists and reads through the package's reader.",
    ),
    Fix(
        "unicode_paths",
        ENGINE,
        engine.apply_unicode_paths,
        "`validate_path` refuses any path outside printable ASCII as 'non-printable characters'.",
        "`anomalib predict --data Röntgen/` failed (167-line traceback) where train and "
        "`simsid-score` read the same folder.",
        "SimSID's predict refuses only control characters in a path; any script is accepted.",
    ),
    Fix(
        "benchmark_results",
        BENCHMARK,
        benchmark.apply_benchmark_results,
        "`BenchmarkJob.collect` takes its columns from the first job's result; `Pipeline.run` "
        "swallows every failure.",
        "A grid of PaDiM, PatchCore and SimSID raised KeyError 'model.init_args.max_epochs' or "
        "'All arrays must be of the same length', wrote no results.csv and exited 0.",
        "For grids holding SimSID: results.csv has every job's row (the union of their columns); "
        "the command exits 1 when no job succeeded.",
    ),
    Fix(
        "benchmark_class_paths",
        BENCHMARK,
        benchmark.apply_benchmark_class_paths,
        "A grid's model `init_args` are passed as written: only the model's own `class_path` is built.",
        "An `evaluator` or `pre_processor` given as a class path reached the model as a dict and the "
        "job failed, so PaDiM's and PatchCore's rows could not carry the audit's matched AUROCs.",
        "For grids holding SimSID: nested class paths in a model's arguments are built first "
        "(the model class resolved as anomalib resolves it).",
    ),
    Fix(
        "benchmark_seed",
        BENCHMARK,
        benchmark.apply_benchmark_seed,
        "The job generator builds each job's model before `BenchmarkJob.run` seeds.",
        "The first job's model (PaDiM's channel draw, SimSID's weights) was unseeded and each later "
        "one started from the previous job's random state: reruns and grid order changed results.",
        "For grids holding SimSID: each job's seed is set before its model is built.",
    ),
)
TARGETS = tuple(dict.fromkeys(fix.target for fix in FIXES))
_APPLIED: set[str] = set()


def disabled() -> set[str]:
    """Names of the fixes switched off by the environment (every name when all are off)."""
    if os.environ.get(NO_AUTOLOAD):
        return {fix.name for fix in FIXES}
    value = os.environ.get(NO_FIXES, "").strip()
    if value.lower() in {"1", "true", "yes", "all"}:
        return {fix.name for fix in FIXES}
    return {name.strip() for name in value.split(",") if name.strip()}


def apply_pending(import_missing: bool = False) -> None:
    """Apply every enabled fix whose target module has finished importing (once each).

    ``import_missing`` imports a target that is not imported at all yet (``import anomalib_simsid``
    without the autoload hook, so that ``Engine`` runs of SimSID get the fixes too).
    """
    off = disabled()
    for fix in FIXES:
        if fix.name in _APPLIED or fix.name in off:
            continue
        module = sys.modules.get(fix.target)
        if module is None and import_missing and fix.target == ENGINE:
            module = importlib.import_module(fix.target)
        if module is None or not hasattr(module, FIX_TARGETS[fix.target]):  # absent, or half-initialised
            continue
        _APPLIED.add(fix.name)
        try:
            fix.apply(module)
        except Exception as err:
            warnings.warn(f"anomalib_simsid could not apply its {fix.name} fix ({err!r}).", stacklevel=2)


def markdown_table() -> str:
    """Format the README's "anomalib 2.7 fixes" table (``python -m anomalib_simsid.fixes``)."""
    rows = ["| fix | anomalib 2.7 bug | effect on SimSID | fix (SimSID runs only) |", "|---|---|---|---|"]
    rows += [f"| `{f.name}` | {f.bug} | {f.effect} | {f.fix} |" for f in FIXES]
    return "\n".join(rows)
