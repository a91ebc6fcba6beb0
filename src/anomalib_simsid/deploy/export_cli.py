r"""Command line for :func:`~anomalib_simsid.deploy.export_openvino`: FP32/FP16/INT8 IRs from one trace.

Usage::

    simsid-export model.ckpt --output exported --compression fp32 fp16 int8 \\
        --data anomalib_simsid.DigitAnatomy --data-args '{"root": "./datasets/DigitAnatomy"}'

INT8 is calibrated on the datamodule's normal training images with SimSID's NNCF settings
(:data:`~anomalib_simsid.models.simsid.adapters.openvino.INT8_DEFAULTS`). Every argument is
checked before the slow
trace, and nothing is written unless every requested precision exported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalib.data import AnomalibDataModule

from anomalib_simsid.data.image_io import ImageReadError
from anomalib_simsid.models.simsid.adapters.checkpoint import NotSimSIDError
from anomalib_simsid.models.simsid.adapters.openvino import COMPRESSIONS, export_openvino


class ArgumentError(ValueError):
    """A command-line argument is unusable; the message names it and says what was expected."""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``simsid-export``."""
    parser = argparse.ArgumentParser(
        prog="simsid-export",
        description="Export a SimSID checkpoint to OpenVINO IR (FP32, FP16, INT8).",
    )
    parser.add_argument("ckpt", type=Path, help="SimSID Lightning checkpoint")
    parser.add_argument("--output", "-o", type=Path, default=Path("exported"), help="export root")
    parser.add_argument("--compression", nargs="+", choices=COMPRESSIONS, default=["fp32"])
    parser.add_argument("--data", default=None, help="datamodule class path (INT8 calibration)")
    parser.add_argument("--data-args", default="{}", help="datamodule init args as JSON")
    parser.add_argument("--calibration-size", type=int, default=300, help="normal training images for INT8")
    parser.add_argument(
        "--int8-options", default=None, help='nncf.quantize keywords as JSON; "{}" = NNCF defaults'
    )
    parser.add_argument(
        "--int8-float-matmul-weights",
        action="store_true",
        help="keep the MatMul weights (memory matrices) of the INT8 IR in float (about 3x larger)",
    )
    return parser


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """``text`` as a JSON object, or an :class:`ArgumentError` naming ``option``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"{option} is not valid JSON ({err.msg} at character {err.pos}): {text!r}"
        raise ArgumentError(msg) from None
    if not isinstance(value, dict):
        msg = f'{option} must be a JSON object such as \'{{"root": "./datasets/X"}}\', got {text!r}'
        raise ArgumentError(msg)
    return value


def build_datamodule(class_path: str, data_args: str) -> AnomalibDataModule:
    """Import and build the datamodule, checking class path, JSON and ``root`` first.

    ``importlib`` rather than ``lightning.pytorch.cli.instantiate_class``: each failure needs its own
    message naming the argument.
    """
    init = parse_json_object(data_args, "--data-args")
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        msg = f"--data {class_path!r} is not a class path; expected e.g. anomalib_simsid.DigitAnatomy"
        raise ArgumentError(msg)
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        msg = f"--data {class_path!r} cannot be imported ({type(err).__name__}: {err})"
        raise ArgumentError(msg) from None
    if not (isinstance(cls, type) and issubclass(cls, AnomalibDataModule)):
        msg = f"--data {class_path!r} is not an anomalib datamodule class"
        raise ArgumentError(msg)
    if "root" in init and not Path(init["root"]).is_dir():
        msg = f"--data-args root {init['root']!r} is not a folder; INT8 calibration reads its training images"
        raise ArgumentError(msg)
    try:
        return cls(**init)
    except TypeError as err:
        msg = f"--data-args do not fit {class_path}: {err}"
        raise ArgumentError(msg) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Export (the ``simsid-export`` entry point); any unusable input exits with code 2 and one line."""
    args = build_parser().parse_args(argv)
    try:
        if "int8" in args.compression and not args.data:
            msg = (
                "--compression int8 needs --data (and --data-args): its normal training images calibrate INT8"
            )
            raise ArgumentError(msg)
        datamodule = build_datamodule(args.data, args.data_args) if args.data else None
        options = (
            None if args.int8_options is None else parse_json_object(args.int8_options, "--int8-options")
        )
        paths = export_openvino(
            args.ckpt,
            args.output,
            args.compression,
            datamodule=datamodule,
            calibration_size=args.calibration_size,
            int8_options=options,
            int8_weight_compression=not args.int8_float_matmul_weights,
        )
    except (NotSimSIDError, FileNotFoundError, PermissionError, ValueError, ImageReadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for compression, path in paths.items():
        print(f"{compression}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
