"""The CLI fixes: seeding, output folders under ``default_root_dir``, one-line user errors.

Each wraps ``AnomalibCLI.before_instantiate_classes`` (after parsing, before the model, data and
engine are built) and acts only when the run's ``--model`` is SimSID; see :data:`..FIXES`.
"""

from __future__ import annotations

import functools
import importlib
import os
import random
import re
import sys
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any

from lightning.fabric.utilities.seed import max_seed_value, min_seed_value

from anomalib_simsid.data.image_io import ImageReadError
from anomalib_simsid.models import SimSID
from anomalib_simsid.models.simsid.adapters.checkpoint import NotSimSIDError
from anomalib_simsid.models.simsid.adapters.export import ExportArgumentError

TRACEBACK = "ANOMALIB_SIMSID_TRACEBACK"
# Errors whose message names the file, folder or option and what was expected: one line is enough.
USER_ERRORS = (
    NotSimSIDError,
    ImageReadError,
    ExportArgumentError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,  # a read-only --default_root_dir: "[Errno 13] Permission denied: '<path>'"
)
_UNION_MISMATCH = "Does not validate against any of the Union subtypes"


def _config(cli: Any) -> Any:
    return cli.config.get(str(cli.subcommand), cli.config)


def names_simsid(class_path: Any) -> bool:
    """Whether ``class_path`` (``SimSID``, ``anomalib_simsid.SimSID``, ...) names SimSID or a subclass."""
    if not isinstance(class_path, str):
        return False
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name or "anomalib.models"), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, SimSID)


def is_simsid_run(cli: Any) -> bool:
    """Whether the parsed ``--model`` class path names SimSID or a subclass of it."""
    model = _config(cli).get("model")
    return names_simsid(
        getattr(model, "class_path", None) or (model.get("class_path") if isinstance(model, dict) else None)
    )


def _wrap(module: ModuleType, fix: Callable[[Any], None]) -> None:
    """Run ``fix(cli)`` before anomalib's ``before_instantiate_classes`` in SimSID runs only."""
    cli_class = module.AnomalibCLI
    original = cli_class.before_instantiate_classes

    @functools.wraps(original)
    def before_instantiate_classes(self: Any) -> None:
        if is_simsid_run(self):
            fix(self)
        original(self)

    cli_class.before_instantiate_classes = before_instantiate_classes


def seed(cli: Any) -> None:
    """Seed like ``LightningCLI._set_seed``: an int seeds, ``true`` draws a random seed, ``false`` skips."""
    from lightning.pytorch import seed_everything
    from lightning.pytorch.utilities import rank_zero_info

    config = _config(cli)
    value = config.get("seed_everything", True)
    if value is False or value is None:
        return
    if value is True:
        # Lightning's seed_everything(None) seeds 0 ("No seed found"), not a random seed.
        value = random.SystemRandom().randint(min_seed_value, max_seed_value)
        rank_zero_info(f"seed_everything: true drew seed {value}; pass --seed_everything {value} to repeat")
    config["seed_everything"] = seed_everything(int(value), workers=True)


def outputs_under_root(cli: Any) -> None:
    """Make relative logger ``save_dir`` and checkpoint ``dirpath`` folders relative to default_root_dir."""
    config = _config(cli)
    root, trainer = config.get("default_root_dir"), config.get("trainer")
    if root is None or trainer is None:
        return
    entries = [("save_dir", trainer.get("logger")), ("dirpath", trainer.get("callbacks"))]
    for key, value in entries:
        for item in value if isinstance(value, list) else [value]:
            init_args = getattr(item, "init_args", None)
            folder = init_args.get(key) if init_args is not None else None
            if folder is not None and not os.path.isabs(folder):
                init_args[key] = os.path.join(root, folder)


def user_message(error: BaseException) -> str | None:
    """One line for a user error, ``None`` for anything else (a bug: the traceback stays).

    jsonargparse reports a class that refused its arguments (``--model.img_size 100``) as a union
    mismatch whose first reason is "Expected a <class 'NoneType'>"; the class's own reason is kept.
    """
    if isinstance(error, USER_ERRORS):
        return f"{type(error).__name__}: {error}"
    text = str(error)
    if isinstance(error, ValueError) and text.startswith(_UNION_MISMATCH) and "Errors:" in text:
        listed = text.split("Errors:", 1)[1].split("Given value", 1)[0].splitlines()
        reasons = [line.strip()[2:] for line in listed if line.strip().startswith("- ")]
        reasons = [reason for reason in reasons if not reason.startswith("Expected a <class 'NoneType'>")]
        class_path = re.search(r"class_path='([^']+)'", text)
        if reasons:
            return f"{class_path.group(1) if class_path else 'configuration'}: {'; '.join(reasons)}"
    return None


def short_errors(_cli: Any) -> None:
    """Print user errors of this SimSID run in one line (``ANOMALIB_SIMSID_TRACEBACK=1``: in full)."""
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        message = user_message(error)
        if message is None or os.environ.get(TRACEBACK):
            previous(kind, error, trace)
            return
        print(f"Error: {message}", file=sys.stderr)
        print(f"(set {TRACEBACK}=1 for the traceback)", file=sys.stderr)

    sys.excepthook = excepthook


def apply_seed(module: ModuleType) -> None:
    """Register :func:`seed` on the CLI."""
    _wrap(module, seed)


def apply_output_root(module: ModuleType) -> None:
    """Register :func:`outputs_under_root` on the CLI."""
    _wrap(module, outputs_under_root)


def apply_short_errors(module: ModuleType) -> None:
    """Register :func:`short_errors` on the CLI."""
    _wrap(module, short_errors)
