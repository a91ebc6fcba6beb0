"""Fixes of anomalib 2.7 behaviour that traps SimSID runs: one registry, each fix scoped to SimSID.

Every fix wraps one anomalib function and changes what it does only when the run's model is SimSID
(or a subclass): the CLI's model class path, or the model handed to ``Engine``. For any other
model the wrapper calls anomalib's function unchanged. Each entry of :data:`FIXES` says which bug,
what it did to SimSID runs, and how it is fixed; the README's "anomalib 2.7 fixes" table lists them.

Switches (environment variables, read when a fix is applied):

* ``ANOMALIB_SIMSID_NO_FIXES=1`` (or ``all``): no fix is applied; ``=name,name`` skips those fixes.
* ``ANOMALIB_SIMSID_NO_AUTOLOAD=1``: no autoload hook (bare ``--model SimSID`` stops resolving;
  use ``anomalib_simsid.SimSID``) and no fix either, also after ``import anomalib_simsid``.

The ``.pth`` autoload hook only triggers :func:`apply_pending` after the modules in
:data:`TARGETS` have run; ``import anomalib_simsid`` calls it too. A fix that cannot be applied
warns and is skipped: a broken plugin must never break plain anomalib.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass

NO_FIXES = "ANOMALIB_SIMSID_NO_FIXES"
NO_AUTOLOAD = "ANOMALIB_SIMSID_NO_AUTOLOAD"


@dataclass(frozen=True)
class Fix:
    """One anomalib 2.7 fix: where it applies, and the README row that explains it."""

    name: str
    target: str  # the anomalib module whose function is wrapped
    ready: str  # an attribute that exists once ``target`` has finished importing
    apply: str  # ``module:function`` inside this package, called with the target module
    bug: str
    effect: str
    fix: str


FIXES: tuple[Fix, ...] = (
    Fix(
        "cli_seed",
        "anomalib.cli.cli",
        "AnomalibCLI",
        "cli:apply_seed",
        "`AnomalibCLI` parses `seed_everything` but never seeds.",
        "Two runs of one config trained different models.",
        "Seeds before the model and data are built: an int seeds with it, `true` draws a random seed, "
        "logs it and saves it in config.yaml, `false` skips.",
    ),
    Fix(
        "cli_output_root",
        "anomalib.cli.cli",
        "AnomalibCLI",
        "cli:apply_output_root",
        "A relative logger `save_dir` or checkpoint `dirpath` is relative to the current folder.",
        "Logs and checkpoints landed in `./logs` whatever `--default_root_dir` said.",
        "Makes them relative to `default_root_dir` (absolute folders are kept).",
    ),
    Fix(
        "cli_short_errors",
        "anomalib.cli.cli",
        "AnomalibCLI",
        "cli:apply_short_errors",
        "Every error ends the CLI with a 150-220 line traceback.",
        "A missing dataset root, a wrong option or a bad checkpoint was hard to find in it.",
        "User errors (missing or unreadable file or folder, foreign checkpoint, a model option the "
        "model refuses) print one line; "
        "`ANOMALIB_SIMSID_TRACEBACK=1` shows the traceback.",
    ),
    Fix(
        "checkpoint_check",
        "anomalib.engine.engine",
        "Engine",
        "engine:apply_checkpoint_check",
        "`--ckpt_path` is read by Lightning before any model hook.",
        "A truncated or foreign file gave a torch zip error that did not name the file.",
        "`fit/validate/test/train/predict` check the checkpoint first: one error naming the file.",
    ),
    Fix(
        "resume_test",
        "anomalib.engine.engine",
        "Engine",
        "engine:apply_resume_test",
        "`Engine.train(ckpt_path=X)` tests `X` again after fitting from it.",
        "A resumed `anomalib train` reported the test metrics of the checkpoint it resumed from.",
        "The test after fitting runs on the trained model.",
    ),
    Fix(
        "run_folders",
        "anomalib.engine.engine",
        "Engine",
        "engine:apply_run_folders",
        "`fit/train` make a new `v<n>`, logger `version_<n>` and `latest` before the run can fail; "
        "a resumed run gets new ones.",
        "Failed runs left empty folders and `latest` on them; one training's metrics and checkpoints "
        "were split over two folders after a resume.",
        "A failed run removes the folders it left empty and puts `latest` back (a run that saved "
        "checkpoints keeps it); a resumed run writes into the folders of the run it resumes.",
    ),
    Fix(
        "predict_reader",
        "anomalib.engine.engine",
        "Engine",
        "engine:apply_predict_reader",
        "`PredictDataset` lists torchvision's raster suffixes and reads with PIL as 8-bit RGB.",
        "`anomalib predict --data <folder>` found no DICOM and scored 16-bit PNGs clipped to white.",
        "For SimSID, `Engine.predict(data_path=...)` lists and reads through the package's reader.",
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
        if module is None and import_missing and fix.target == "anomalib.engine.engine":
            module = importlib.import_module(fix.target)
        if module is None or not hasattr(module, fix.ready):  # absent, or still half-initialised
            continue
        _APPLIED.add(fix.name)
        try:
            module_name, function = fix.apply.split(":")
            getattr(importlib.import_module(f"{__name__}.{module_name}"), function)(module)
        except Exception as err:
            warnings.warn(f"anomalib_simsid could not apply its {fix.name} fix ({err!r}).", stacklevel=2)


def markdown_table() -> str:
    """Format the README's "anomalib 2.7 fixes" table (``python -m anomalib_simsid.fixes``)."""
    rows = ["| fix | anomalib 2.7 bug | effect on SimSID | fix (SimSID runs only) |", "|---|---|---|---|"]
    rows += [f"| `{f.name}` | {f.bug} | {f.effect} | {f.fix} |" for f in FIXES]
    return "\n".join(rows)
