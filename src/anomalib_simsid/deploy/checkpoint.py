"""Load a SimSID Lightning checkpoint for deployment, refusing anything else with a clear error.

A Lightning checkpoint does not record its model class, so a PaDiM or PatchCore checkpoint would
load into ``SimSID.load_from_checkpoint`` only to fail deep inside ``load_state_dict`` (or, worse,
partly succeed). We check the file first: it must be a torch file, a Lightning checkpoint, carry
SimSID's hyper-parameters and SimSID's generator/critic weights, and have a fitted threshold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from anomalib_simsid.models import SimSID

# Hyper-parameters and state-dict prefixes that only a SimSID checkpoint has.
REQUIRED_HPARAMS = ("img_size", "num_patch", "level", "base_width")
REQUIRED_PREFIXES = ("model.generator.encoder.", "model.generator.student.", "model.discriminator.")
POST_PROCESSOR_KEYS = (
    "post_processor._image_threshold",
    "post_processor.image_min",
    "post_processor.image_max",
)


class NotSimSIDError(ValueError):
    """The file is not a usable SimSID checkpoint or export; the message says what it is instead."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read ``path`` as a Lightning checkpoint dict, with ``weights_only=True`` as anomalib does."""
    path = Path(path)
    if not path.is_file():
        msg = f"checkpoint {path} does not exist or is not a file"
        raise FileNotFoundError(msg)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = _load_failure(err)
        msg = f"{path} is not a PyTorch Lightning checkpoint of SimSID: torch.load failed ({reason})"
        raise NotSimSIDError(msg) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        kind = type(checkpoint).__name__
        msg = f"{path} is a torch file ({kind}) but not a Lightning checkpoint (no 'state_dict')"
        raise NotSimSIDError(msg)
    return checkpoint


def _load_failure(err: Exception) -> str:
    """Say why in one line, without torch's advice to retry with ``weights_only=False`` (unsafe here)."""
    text = str(err)
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds Python objects other than tensors and plain containers, which are never unpickled"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(err).__name__}: {first[:200]}"


def check_simsid_checkpoint(checkpoint: dict[str, Any], path: str | Path = "<checkpoint>") -> dict[str, Any]:
    """Raise :class:`NotSimSIDError` unless ``checkpoint`` is a trained SimSID; return its hparams."""
    hparams = checkpoint.get("hyper_parameters") or {}
    state = checkpoint["state_dict"]
    missing_prefixes = [p for p in REQUIRED_PREFIXES if not any(k.startswith(p) for k in state)]
    missing_hparams = [h for h in REQUIRED_HPARAMS if h not in hparams]
    if missing_prefixes or missing_hparams:
        top = sorted({k.split(".")[1] if k.startswith("model.") else k.split(".")[0] for k in state})[:8]
        msg = (
            f"{path} is a Lightning checkpoint but not a SimSID one: it lacks "
            f"{', '.join(missing_prefixes + missing_hparams)} (its model has {top}). "
            "Export or score it with the anomalib model that trained it."
        )
        raise NotSimSIDError(msg)
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
