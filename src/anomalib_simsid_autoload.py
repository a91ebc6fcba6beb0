"""Import ``anomalib_simsid`` right after ``anomalib.models`` so bare ``--model SimSID`` resolves.

anomalib 2.7 has no plugin entry points: jsonargparse resolves ``--model SimSID`` only among
subclasses that are already imported. A one-line ``.pth`` file imports this module at interpreter
start; it imports nothing heavy itself, but installs a one-shot import hook that loads the plugin
as soon as ``anomalib.models`` has finished importing. A broken plugin only warns: it must never
break plain ``anomalib``. Set ``ANOMALIB_SIMSID_NO_AUTOLOAD=1`` to switch the hook off.

The same mechanism fixes one anomalib 2.7 CLI bug that breaks repeatability: ``AnomalibCLI``
parses ``seed_everything`` but never calls it, so ``seed_everything: 42`` in a config did nothing
and two identical ``anomalib train`` runs trained different models. After ``anomalib.cli.cli`` is
imported, the hook makes the CLI seed before it instantiates the model and data, as Lightning's
CLI does (an int seeds with that value, ``true`` draws a random seed and logs it, ``false`` skips).

At the same point it keeps a run's outputs under ``--default_root_dir``: anomalib 2.7 leaves a
relative logger ``save_dir`` (and checkpoint ``dirpath``) relative to the current folder, so CSV logs
and checkpoints landed in ``./results/logs`` whatever ``--default_root_dir`` said. The hook makes such
relative folders relative to ``default_root_dir``. Absolute folders are left as they are.

Finally it applies the plugin's ``Engine`` fixes (``anomalib_simsid.fixes.engine``) once
``anomalib.engine.engine`` has finished importing, since the plugin itself may load while that module
is still half-initialised.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from types import ModuleType

_MODELS = "anomalib.models"
_CLI = "anomalib.cli.cli"
_ENGINE = "anomalib.engine.engine"
_PLUGIN = "anomalib_simsid"


def _load_plugin(_module: ModuleType) -> None:
    try:
        importlib.import_module(_PLUGIN)
    except Exception as err:
        warnings.warn(f"anomalib_simsid could not be loaded ({err!r}); use dotted class paths.", stacklevel=2)


def _seed_from_config(cli: object) -> None:
    """Seed like ``LightningCLI._set_seed``: before any class of the subcommand is instantiated."""
    config = cli.config.get(str(cli.subcommand), cli.config)
    seed = config.get("seed_everything", True)
    if seed is False or seed is None:
        return
    from lightning.pytorch import seed_everything

    config["seed_everything"] = seed_everything(None if seed is True else int(seed), workers=True)


def _outputs_under_root(cli: object) -> None:
    """Make relative logger ``save_dir`` and checkpoint ``dirpath`` folders relative to default_root_dir."""
    config = cli.config.get(str(cli.subcommand), cli.config)
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


def _apply_engine_fix(_module: ModuleType) -> None:
    try:
        importlib.import_module(f"{_PLUGIN}.fixes.engine").apply()
    except Exception as err:
        warnings.warn(f"anomalib_simsid could not apply its engine fix ({err!r}).", stacklevel=2)


def _patch_cli(module: ModuleType) -> None:
    try:
        cli_class = module.AnomalibCLI
        original = cli_class.before_instantiate_classes
        if getattr(original, "_seeds", False):
            return

        def before_instantiate_classes(self: object) -> None:
            for fix, what in ((_seed_from_config, "seed"), (_outputs_under_root, "place the outputs of")):
                try:
                    fix(self)
                except Exception as err:  # like a broken plugin: warn, never break plain anomalib
                    warnings.warn(f"anomalib_simsid could not {what} the CLI run ({err!r}).", stacklevel=2)
            original(self)

        before_instantiate_classes._seeds = True
        cli_class.before_instantiate_classes = before_instantiate_classes
    except Exception as err:
        warnings.warn(f"anomalib_simsid could not fix CLI seeding ({err!r}).", stacklevel=2)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds ``target`` once, then runs ``callback(module)`` right after the module has executed."""

    def __init__(self, target: str, callback: Callable[[ModuleType], None]) -> None:
        self.target = target
        self.callback = callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            self.callback(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Install the hooks unless disabled; a module imported already gets its callback at once."""
    if os.environ.get("ANOMALIB_SIMSID_NO_AUTOLOAD"):
        return
    for target, callback in ((_MODELS, _load_plugin), (_CLI, _patch_cli), (_ENGINE, _apply_engine_fix)):
        if target in sys.modules:
            callback(sys.modules[target])
        elif not any(isinstance(f, _AfterImport) and f.target == target for f in sys.meta_path):
            sys.meta_path.insert(0, _AfterImport(target, callback))


install()
