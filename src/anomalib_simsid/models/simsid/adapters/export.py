"""SimSID through anomalib's ``to_onnx``/``to_openvino`` (``anomalib export``, ``Engine.export``).

anomalib 2.7's export has three traps for SimSID, handled by :class:`SimSIDExport`, which ``SimSID``
inherits, so other models are untouched:

* ``--compression_type INT8_PTQ`` calibrates on the validation split (normal *and* abnormal images)
  with NNCF's default settings, which quantise SimSID's memory reads and wreck the score ranking;
  without ``--data`` it fails only after the slow trace. For SimSID, INT8_PTQ goes through the
  package's OpenVINO export (the datamodule's normal training images and SimSID's INT8 settings,
  written as ``model_int8.xml``), and is refused before the trace when no datamodule is given.
* An ``--input_size`` other than the model's ``img_size`` is refused: the graph resizes back to
  ``img_size``, and anomalib's own inferencer cannot feed the fixed input.
* The trace printed ~4,100 lines: anomalib asks for opset 14, which the dynamo exporter (opset 18)
  fails to down-convert, logging a harmless traceback, and the anomalib CLI's INFO logging shows
  every ONNX optimiser pass. SimSID is traced at :data:`OPSET` and the ``onnxscript``/``onnx_ir``
  loggers are held at WARNING during the trace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from anomalib.deploy import CompressionType

OPSET = 18  # the dynamo exporter's own opset; anomalib's default (14) only adds a failed down-conversion
ONNX_LOGGERS = ("onnxscript", "onnx_ir")
INT8_NEEDS_DATA = (
    "SimSID INT8 calibrates on the normal training images of a datamodule: add --data <datamodule> "
    "(e.g. --data anomalib_simsid.DigitAnatomy --data.root ./datasets/DigitAnatomy), or run "
    "simsid-export <ckpt> --compression int8 --data anomalib_simsid.DigitAnatomy "
    '--data-args \'{"root": "./datasets/DigitAnatomy"}\''
)


class ExportArgumentError(ValueError):
    """An export argument SimSID cannot honour (input size, INT8 without data); says what to do."""


def check_input_size(img_size: int, input_size: Sequence[int] | None) -> None:
    """Refuse a static export size other than the model's: the graph would resize it back to ``img_size``.

    An image exported at another size is resized twice (once by the caller, once in-graph), so its
    scores differ from training, and anomalib's inferencer, which resizes to the model size, cannot
    feed the fixed input at all.

    Args:
        img_size: the model's input side.
        input_size: the requested static size, or ``None`` (dynamic).
    """
    if input_size is not None and tuple(int(side) for side in input_size) != (img_size, img_size):
        msg = (
            f"input size {list(input_size)} does not match the SimSID model's img_size {img_size}: export "
            f"without an input size (dynamic input, resized in-graph) or with [{img_size}, {img_size}]"
        )
        raise ExportArgumentError(msg)


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Hold the named loggers at WARNING or above for the duration, then restore their levels.

    The ONNX optimiser (:data:`ONNX_LOGGERS`) logs one INFO line per rewritten node, NNCF one per
    skipped node: thousands of lines around one export.

    Args:
        *names: logger names.

    Yields:
        Nothing; the levels are restored on exit.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class SimSIDExport:
    """SimSID's ``to_onnx``/``to_openvino``: size check, opset, quiet trace, INT8 on training normals."""

    def to_onnx(
        self, export_root: Path | str, model_file_name: str = "model", input_size: Any = None, **kwargs: Any
    ) -> Path:
        """Export to ONNX like anomalib at :data:`OPSET`, refusing an input size other than ``img_size``.

        Args:
            export_root: folder of the export (anomalib's layout below it).
            model_file_name: file name without suffix.
            input_size: ``None`` (dynamic) or ``img_size`` square.
            **kwargs: anomalib's ``to_onnx`` keywords.

        Returns:
            Path of the ``.onnx`` file.
        """
        check_input_size(int(self.hparams.img_size), input_size)
        kwargs.setdefault("opset_version", OPSET)
        with quiet_loggers(*ONNX_LOGGERS):
            return super().to_onnx(export_root, model_file_name, input_size, **kwargs)

    def to_openvino(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: Any = None,
        compression_type: CompressionType | None = None,
        datamodule: Any = None,
        **kwargs: Any,
    ) -> Path:
        """Export to OpenVINO like anomalib; INT8_PTQ calibrates on the training normals (SimSID settings).

        Args:
            export_root: folder of the export (anomalib's layout below it).
            model_file_name: file name without suffix.
            input_size: ``None`` (dynamic) or ``img_size`` square.
            compression_type: anomalib's; ``INT8_PTQ`` goes through :func:`.openvino.export_openvino`.
            datamodule: the training datamodule (INT8 only).
            **kwargs: anomalib's ``to_openvino`` keywords.

        Returns:
            Path of the ``.xml`` file.
        """
        check_input_size(int(self.hparams.img_size), input_size)
        if compression_type is None or CompressionType(compression_type) != CompressionType.INT8_PTQ:
            return super().to_openvino(
                export_root, model_file_name, input_size, compression_type, datamodule, **kwargs
            )
        if datamodule is None:
            raise ExportArgumentError(INT8_NEEDS_DATA)
        from .openvino import TrainNormalsCalibration, export_openvino  # imports the model: on use

        size = {}  # export_openvino's own default calibration size unless the caller chose one
        if isinstance(datamodule, TrainNormalsCalibration):  # already the training normals: unwrap
            datamodule, size = datamodule.datamodule, {"calibration_size": datamodule.max_images}
        paths = export_openvino(
            self,
            export_root,
            ("int8",),
            datamodule=datamodule,
            **size,
            input_size=input_size,
            model_file_name=model_file_name,
        )
        return paths["int8"]
