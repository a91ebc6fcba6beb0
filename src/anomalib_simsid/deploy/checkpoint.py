"""Load a SimSID Lightning checkpoint for deployment, refusing anything else with a clear error.

The structure check (torch file, Lightning checkpoint, SimSID's hyper-parameters and weights) is the
model's own (:mod:`anomalib_simsid.models.simsid.adapters.checkpoint`); deployment also needs a fitted
threshold and normalisation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from anomalib_simsid.models import SimSID
from anomalib_simsid.models.simsid.adapters.checkpoint import (
    REQUIRED_HPARAMS,
    REQUIRED_PREFIXES,
    NotSimSIDError,
    check_structure,
    read_checkpoint,
)

__all__ = [
    "REQUIRED_HPARAMS",
    "REQUIRED_PREFIXES",
    "NotSimSIDError",
    "check_simsid_checkpoint",
    "load_simsid",
    "prepare_for_deployment",
    "read_checkpoint",
]

POST_PROCESSOR_KEYS = (
    "post_processor._image_threshold",
    "post_processor.image_min",
    "post_processor.image_max",
)


def check_simsid_checkpoint(checkpoint: dict[str, Any], path: str | Path = "<checkpoint>") -> dict[str, Any]:
    """Raise :class:`NotSimSIDError` unless ``checkpoint`` is a trained SimSID; return its hparams."""
    hparams = check_structure(checkpoint, path)
    state = checkpoint["state_dict"]
    for key in POST_PROCESSOR_KEYS:
        value = state.get(key)
        if value is None or not math.isfinite(float(value)):
            msg = (
                f"{path} is a SimSID checkpoint without a fitted threshold/normalisation ({key} = {value}). "
                "Validate the model (Engine.fit with a validation set of normal and abnormal images) "
                "before exporting, otherwise every normalised score and label would be meaningless."
            )
            raise NotSimSIDError(msg)
    return dict(hparams)


def load_simsid(path: str | Path, map_location: str = "cpu") -> SimSID:
    """Check ``path`` and load it as :class:`anomalib_simsid.SimSID` in eval mode."""
    check_simsid_checkpoint(read_checkpoint(path), path)
    return prepare_for_deployment(SimSID.load_from_checkpoint(path, map_location=map_location))


def prepare_for_deployment(model: SimSID) -> SimSID:
    """Eval mode, refuse an unfitted post-processor, and switch threshold matching off.

    A post-processor that never saw validation data (NaN threshold, min or max) would make every
    normalised score and label meaningless. Threshold matching would apply the image threshold (a
    critic logit) to the residual map and saturate the heatmap; checkpoints trained before
    ``SimSID.configure_post_processor`` turned it off still carry it, so it is turned off here too.
    """
    post = getattr(model, "post_processor", None)
    if post is not None:
        for name in ("_image_threshold", "image_min", "image_max"):
            value = getattr(post, name, None)
            if value is not None and not torch.isfinite(value).all():
                msg = (
                    f"the model's post-processor is not fitted ({name} = {value.item()}): run validation "
                    "(Engine.fit with a validation set) before exporting, or exported scores are meaningless"
                )
                raise NotSimSIDError(msg)
        post.enable_threshold_matching = False
    return model.eval()
