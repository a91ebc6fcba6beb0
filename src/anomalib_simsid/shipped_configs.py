"""The shipped configs, reachable after ``pip install``: ``simsid-config [NAME]`` prints their paths.

The YAMLs of the repository's ``configs/`` ship inside the wheel as ``anomalib_simsid/configs/``.
A pip user has no checkout to pass ``--config configs/zhanglab.yaml`` from, so::

    simsid-config                 # lists the shipped configs, one path a line
    anomalib train --model SimSID --config "$(simsid-config zhanglab)" --data.root /data/zhanglab
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def config_dir() -> Path:
    """Return the shipped configs' folder: in the installed wheel, else the checkout's ``configs/``."""
    packaged = Path(__file__).resolve().parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


def shipped_config(name: str) -> Path:
    """Return the path of the shipped config ``name`` (``zhanglab``, ``zhanglab.yaml``, ``benchmark``).

    Raises:
        FileNotFoundError: no shipped config of that name; the message lists them.
    """
    path = config_dir() / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if not path.is_file():
        names = ", ".join(p.stem for p in sorted(config_dir().glob("*.yaml")))
        msg = f"no shipped config {name!r} in {config_dir()}; expected one of: {names}"
        raise FileNotFoundError(msg)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Print the path of a shipped config, or of every shipped config (``simsid-config``)."""
    parser = argparse.ArgumentParser(prog="simsid-config", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="config name, e.g. zhanglab or benchmark (none: list all)")
    args = parser.parse_args(argv)
    try:
        paths = [shipped_config(args.name)] if args.name else sorted(config_dir().glob("*.yaml"))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
