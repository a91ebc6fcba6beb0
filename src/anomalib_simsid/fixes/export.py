"""SimSID through ``anomalib export`` / ``Engine.export``: INT8 calibration and the input size.

anomalib 2.7's export has two traps for SimSID, both fixed on ``SimSID.to_openvino``/``to_onnx``
(what ``Engine.export`` calls, after loading ``--ckpt_path``), so other models are untouched:

* ``--compression_type INT8_PTQ`` calibrates on the validation split (normal *and* abnormal images)
  with NNCF's default settings, which quantise SimSID's memory reads and wreck the score ranking;
  without ``--data`` it fails only after the slow trace. For SimSID, INT8_PTQ goes through
  :func:`~anomalib_simsid.deploy.export_openvino` instead (the datamodule's normal training images,
  SimSID's :data:`~anomalib_simsid.deploy.export.INT8_DEFAULTS`, written as ``model_int8.xml``), and
  is refused before the trace when no datamodule is given.
* An ``--input_size`` other than the model's ``img_size`` is refused: the graph resizes back to
  ``img_size``, and anomalib's own inferencer cannot feed the fixed input.
* The trace printed ~4,100 lines: anomalib asks for opset 14, which the dynamo exporter (opset 18)
  fails to down-convert, logging a harmless traceback, and the anomalib CLI's INFO logging shows
  every ONNX optimiser pass. SimSID is traced at :data:`~anomalib_simsid.deploy.export.OPSET` and
  the ``onnxscript``/``onnx_ir`` loggers are held at WARNING during the trace.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

from anomalib.deploy import CompressionType

from anomalib_simsid.deploy.export import OPSET, TrainNormalsCalibration, check_input_size, export_openvino
from anomalib_simsid.models import SimSID

INT8_NEEDS_DATA = (
    "SimSID INT8 calibrates on the normal training images of a datamodule: add --data <datamodule> "
    "(e.g. --data anomalib_simsid.DigitAnatomy --data.root ./datasets/DigitAnatomy), or run "
    "simsid-export <ckpt> --compression int8 --data anomalib_simsid.DigitAnatomy "
    '--data-args \'{"root": "./datasets/DigitAnatomy"}\''
)


def apply() -> None:
    """Wrap ``SimSID.to_onnx`` and ``SimSID.to_openvino`` once."""
    if getattr(SimSID.to_openvino, "__simsid_fix__", False):
        return
    SimSID.to_onnx = _checked_onnx(SimSID.to_onnx)
    SimSID.to_openvino = _simsid_openvino(SimSID.to_openvino)


ONNX_LOGGERS = ("onnxscript", "onnx_ir")


@contextlib.contextmanager
def _quiet_onnx_passes() -> Iterator[None]:
    """Hold the ONNX optimiser loggers at WARNING (one INFO line per rewritten node otherwise)."""
    loggers = [logging.getLogger(name) for name in ONNX_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _checked_onnx(original: Any) -> Any:
    @functools.wraps(original)
    def to_onnx(
        self: SimSID, export_root: Any, model_file_name: str = "model", input_size: Any = None, **kw: Any
    ):
        check_input_size(int(self.hparams.img_size), input_size)
        kw.setdefault("opset_version", OPSET)
        with _quiet_onnx_passes():
            return original(self, export_root, model_file_name, input_size, **kw)

    return to_onnx


def _simsid_openvino(original: Any) -> Any:
    @functools.wraps(original)
    def to_openvino(
        self: SimSID,
        export_root: Any,
        model_file_name: str = "model",
        input_size: Any = None,
        compression_type: CompressionType | None = None,
        datamodule: Any = None,
        **kwargs: Any,
    ) -> Any:
        check_input_size(int(self.hparams.img_size), input_size)
        if compression_type is None or CompressionType(compression_type) != CompressionType.INT8_PTQ:
            return original(
                self, export_root, model_file_name, input_size, compression_type, datamodule, **kwargs
            )
        if datamodule is None:
            raise ValueError(INT8_NEEDS_DATA)
        calibration_size = 300
        if isinstance(datamodule, TrainNormalsCalibration):  # already the training normals: unwrap
            datamodule, calibration_size = datamodule.datamodule, datamodule.max_images
        paths = export_openvino(
            self,
            export_root,
            ("int8",),
            datamodule=datamodule,
            calibration_size=calibration_size,
            input_size=input_size,
            model_file_name=model_file_name,
        )
        return paths["int8"]

    to_openvino.__simsid_fix__ = True  # type: ignore[attr-defined]
    return to_openvino
