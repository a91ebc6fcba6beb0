"""Deployment: OpenVINO export (FP32/FP16/INT8), a predictor for exported models, and folder scoring."""

from .checkpoint import (
    NotSimSIDError,
    check_simsid_checkpoint,
    load_simsid,
    prepare_for_deployment,
    read_checkpoint,
)
from .export import (
    TrainNormalsCalibration,
    export_openvino,
    normal_training_subset,
    read_metadata,
    torch_reference,
)
from .predictor import SimSIDPredictor

__all__ = [
    "NotSimSIDError",
    "SimSIDPredictor",
    "TrainNormalsCalibration",
    "check_simsid_checkpoint",
    "export_openvino",
    "load_simsid",
    "normal_training_subset",
    "prepare_for_deployment",
    "read_checkpoint",
    "read_metadata",
    "torch_reference",
]
