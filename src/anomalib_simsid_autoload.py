"""Import ``anomalib_simsid`` right after ``anomalib.models`` so bare ``--model SimSID`` resolves.

anomalib 2.7 has no plugin entry points: jsonargparse resolves ``--model SimSID`` only among
subclasses that are already imported. A one-line ``.pth`` file imports this module at interpreter
start; it imports nothing heavy itself, but installs one-shot import hooks: the plugin loads as soon
as ``anomalib.models`` has finished importing, and the plugin's fix registry
(``anomalib_simsid.fixes``, every fix scoped to SimSID runs) is asked to apply what it can after each
module it patches has finished importing (the CLI must be patched before it parses its arguments,
and the plugin itself may load while those modules are still half-initialised). A broken plugin
only warns: it must never break plain ``anomalib``.

``ANOMALIB_SIMSID_NO_AUTOLOAD=1`` switches the hook (and every fix) off;
``ANOMALIB_SIMSID_NO_FIXES=1`` keeps the hook but applies no fix.
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
_PLUGIN = "anomalib_simsid"
CLI = "anomalib.cli.cli"
ENGINE = "anomalib.engine.engine"
BENCHMARK = "anomalib.pipelines.benchmark.pipeline"
# The one list of the modules the plugin's fixes patch, each with an attribute that exists once the
# module has finished importing (``anomalib_simsid.fixes`` names its targets from here).
FIX_TARGETS = {CLI: "AnomalibCLI", ENGINE: "Engine", BENCHMARK: "Benchmark"}


def _load_plugin(_module: ModuleType) -> None:
    try:
        importlib.import_module(_PLUGIN)
    except Exception as err:
        warnings.warn(f"anomalib_simsid could not be loaded ({err!r}); use dotted class paths.", stacklevel=2)


def _apply_fixes(_module: ModuleType) -> None:
    plugin = sys.modules.get(_PLUGIN)
    if plugin is None or not hasattr(plugin, "_apply_fixes"):  # it applies them itself when imported
        return
    try:
        importlib.import_module(f"{_PLUGIN}.fixes").apply_pending()
    except Exception as err:
        warnings.warn(f"anomalib_simsid could not apply its fixes ({err!r}).", stacklevel=2)


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
    hooks = [(_MODELS, _load_plugin), *((target, _apply_fixes) for target in FIX_TARGETS)]
    for target, callback in hooks:
        if target in sys.modules:
            callback(sys.modules[target])
        elif not any(isinstance(f, _AfterImport) and f.target == target for f in sys.meta_path):
            sys.meta_path.insert(0, _AfterImport(target, callback))


install()
