"""Import ``anomalib_simsid`` right after ``anomalib.models`` so bare ``--model SimSID`` resolves.

anomalib 2.7 has no plugin entry points: jsonargparse resolves ``--model SimSID`` only among
subclasses that are already imported. A one-line ``.pth`` file imports this module at interpreter
start; it imports nothing heavy itself, but installs a one-shot import hook that loads the plugin
as soon as ``anomalib.models`` has finished importing. A broken plugin only warns: it must never
break plain ``anomalib``. Set ``ANOMALIB_SIMSID_NO_AUTOLOAD=1`` to switch the hook off.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

_TARGET = "anomalib.models"
_PLUGIN = "anomalib_simsid"


def _load_plugin() -> None:
    try:
        importlib.import_module(_PLUGIN)
    except Exception as err:
        warnings.warn(f"anomalib_simsid could not be loaded ({err!r}); use dotted class paths.", stacklevel=2)


class _AfterModelsImport(importlib.abc.MetaPathFinder):
    """Finds ``anomalib.models`` once, then chains the plugin import after its execution."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            _load_plugin()

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Install the hook unless disabled or already too late (then import directly)."""
    if os.environ.get("ANOMALIB_SIMSID_NO_AUTOLOAD"):
        return
    if _TARGET in sys.modules:
        _load_plugin()
        return
    if not any(isinstance(f, _AfterModelsImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterModelsImport())


install()
