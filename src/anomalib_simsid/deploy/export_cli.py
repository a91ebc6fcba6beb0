r"""Command line for :func:`~anomalib_simsid.deploy.export_openvino`: FP32/FP16/INT8 IRs from one trace.

Usage::

    python -m anomalib_simsid.deploy.export_cli model.ckpt --output exported --compression fp32 fp16 int8 \\
        --data anomalib_simsid.DigitAnatomy --data-args '{"root": "./datasets/DigitAnatomy"}'

``anomalib export --compression_type INT8_PTQ`` quantises with NNCF's default settings and cannot
take others; this command uses SimSID's (:data:`~anomalib_simsid.deploy.export.INT8_DEFAULTS`),
calibrated on the datamodule's normal training images.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import NotSimSIDError
from .export import COMPRESSIONS, export_openvino


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m anomalib_simsid.deploy.export_cli``."""
    parser = argparse.ArgumentParser(
        prog="python -m anomalib_simsid.deploy.export_cli",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Export; a checkpoint that is not SimSID's or a missing datamodule exits with code 2."""
    args = build_parser().parse_args(argv)
    datamodule = None
    if args.data:
        module, _, name = args.data.rpartition(".")
        datamodule = getattr(importlib.import_module(module), name)(**json.loads(args.data_args))
    options = None if args.int8_options is None else json.loads(args.int8_options)
    try:
        paths = export_openvino(
            args.ckpt,
            args.output,
            args.compression,
            datamodule=datamodule,
            calibration_size=args.calibration_size,
            int8_options=options,
        )
    except (NotSimSIDError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for compression, path in paths.items():
        print(f"{compression}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
