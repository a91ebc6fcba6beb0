"""Deployment: a predictor for exported models, folder scoring, and the ``simsid-export`` command.

The export itself and the checkpoint reader belong to the model (``models/simsid/adapters``); they are
re-exported here. ``deploy`` imports ``models``, never the reverse.
"""

from anomalib_simsid.models.simsid.adapters.checkpoint import (
    NotSimSIDError,
    check_simsid_checkpoint,
    load_simsid,
    prepare_for_deployment,
    read_checkpoint,
)
from anomalib_simsid.models.simsid.adapters.openvino import (
    TrainNormalsCalibration,
    export_openvino,
    normal_training_subset,
    parity_bar,
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
    "parity_bar",
    "prepare_for_deployment",
    "read_checkpoint",
    "read_metadata",
    "torch_reference",
]
