"""Narrow patches of anomalib 2.7 behaviour that traps SimSID users; each module says which bug and why.

Applied once when the plugin is imported (see ``anomalib_simsid/__init__.py``), each through its
module's ``apply()``. A patch that fails to apply only warns: a broken plugin must never break plain
anomalib. The CLI seeding fix lives in the ``.pth`` autoload hook because it must be in place before
the CLI parses its arguments.
"""

from __future__ import annotations

import importlib
import warnings

_MODULES: tuple[str, ...] = ("engine", "predict", "export")


def apply_all() -> None:
    """Apply every patch module once; warn (never raise) when one cannot be applied."""
    for name in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}").apply()
        except Exception as err:
            warnings.warn(f"anomalib_simsid could not apply its {name} fix ({err!r}).", stacklevel=2)
