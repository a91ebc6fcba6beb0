"""SimSID checkpoints: the one reader, the checks, and loading a trained model for deployment.

A Lightning checkpoint does not record its model class, so a PaDiM or PatchCore checkpoint would load
into ``SimSID`` only to fail deep inside ``load_state_dict`` (or, worse, partly succeed). The file
must be a torch file, a Lightning checkpoint, and carry SimSID's hyper-parameters and its
generator/critic weights (:func:`check_structure`: the model's ``on_load_checkpoint``, the ``Engine``
fixes and deployment use it); deployment also needs a fitted threshold and normalisation.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..lightning_model import SimSID

# Hyper-parameters and state-dict prefixes that only a SimSID checkpoint has.
REQUIRED_HPARAMS = ("img_size", "num_patch", "level", "base_width")
REQUIRED_PREFIXES = ("model.generator.encoder.", "model.generator.student.", "model.discriminator.")
# Options earlier versions had, with their paper values. A checkpoint trained with another value
# needs the class that still has the option (the research ones: benchmarks/research/simsid_options.py).
REMOVED_OPTIONS = {
    "skip_levels": 2,
    "use_inpainting": True,
    "critic_blur_sigma": 0.0,
    "nuisance_strength": 0.0,
    "intensity_standardise": False,
    "ema_decay": 0.0,
}


class NotSimSIDError(ValueError):
    """The file is not a usable SimSID checkpoint or export; the message says what it is instead."""


def read_checkpoint(
    path: str | Path, mmap: bool = False, allow_objects: bool = False
) -> dict[str, Any] | None:
    """Read ``path`` as a Lightning checkpoint dict, with ``weights_only=True`` as anomalib does.

    The one place a SimSID checkpoint file is read (the model, the ``Engine`` fixes, deployment).

    Args:
        path: the checkpoint file.
        mmap: map the file instead of reading it (a quick look at its keys).
        allow_objects: return ``None`` for a file holding Python objects beyond tensors and plain
            containers (Lightning's own loader then decides) instead of refusing it.

    Returns:
        The checkpoint, or ``None`` (only with ``allow_objects``).

    Raises:
        FileNotFoundError: no such file.
        NotSimSIDError: not a readable torch file, or not a Lightning checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"checkpoint {path} does not exist or is not a file"
        raise FileNotFoundError(msg)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if allow_objects:
            return None
        msg = f"{path} cannot be read as a checkpoint: torch.load failed ({_load_failure(err)})"
        raise NotSimSIDError(msg) from None
    except Exception as err:
        msg = f"{path} cannot be read as a checkpoint: torch.load failed ({_load_failure(err)})"
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
    return f"truncated or not a torch file? {type(err).__name__}: {first[:200]}"


def check_structure(checkpoint: dict[str, Any], path: str | Path = "the checkpoint") -> dict[str, Any]:
    """Raise :class:`NotSimSIDError` unless ``checkpoint`` has SimSID's hyper-parameters and weights.

    Only the structure is checked: a resumed run may start from a checkpoint saved before any
    validation, so a fitted threshold is not required here (deployment checks it on top).

    Returns:
        the checkpoint's hyper-parameters.

    Args:
        checkpoint: as :func:`read_checkpoint` returns it.
        path: named in the error.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    state = checkpoint.get("state_dict") or {}
    missing = [p for p in REQUIRED_PREFIXES if not any(k.startswith(p) for k in state)]
    missing += [h for h in REQUIRED_HPARAMS if h not in hparams]
    if missing:
        top = sorted({k.split(".")[1] if k.startswith("model.") else k.split(".")[0] for k in state})[:8]
        msg = (
            f"{path} is not a SimSID checkpoint: it lacks {', '.join(missing)} (its model has {top}). "
            "Use it with the anomalib model that trained it."
        )
        raise NotSimSIDError(msg)
    return dict(hparams)


def check_options(hparams: dict[str, Any], accepted: set[str], path: str | Path = "the checkpoint") -> None:
    """Refuse a checkpoint trained with an option the loading class does not have (:data:`REMOVED_OPTIONS`).

    Loading it would silently drop the option (Lightning passes only the arguments a class takes)
    and score with another model than the one trained.

    Args:
        hparams: the checkpoint's hyper-parameters.
        accepted: the argument names of the class that loads it.
        path: named in the error.

    Raises:
        NotSimSIDError: an option is set to a non-paper value and ``accepted`` lacks it.
    """
    for name, paper in REMOVED_OPTIONS.items():
        if name in hparams and name not in accepted and hparams[name] != paper:
            msg = (
                f"{path} was trained with {name}={hparams[name]!r}, an option SimSID no longer has "
                f"(paper: {paper!r}); load it with benchmarks.research.simsid_options.SimSIDResearch"
            )
            raise NotSimSIDError(msg)


POST_PROCESSOR_KEYS = (
    "post_processor._image_threshold",
    "post_processor.image_min",
    "post_processor.image_max",
)


def check_simsid_checkpoint(checkpoint: dict[str, Any], path: str | Path = "<checkpoint>") -> dict[str, Any]:
    """Check that ``checkpoint`` is a trained SimSID: its structure and a fitted threshold.

    Args:
        checkpoint: as :func:`read_checkpoint` returns it.
        path: named in the error.

    Returns:
        The checkpoint's hyper-parameters.

    Raises:
        NotSimSIDError: not SimSID, or never validated (no threshold and normalisation).
    """
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
    return hparams


def load_simsid(path: str | Path, map_location: str = "cpu") -> SimSID:
    """Check ``path`` and load it as :class:`~anomalib_simsid.SimSID`, ready for deployment.

    Args:
        path: a trained SimSID checkpoint.
        map_location: device to load onto.

    Returns:
        The model in eval mode (see :func:`prepare_for_deployment`).
    """
    from ..lightning_model import SimSID  # the model imports this module: resolved on use

    check_simsid_checkpoint(read_checkpoint(path), path)
    return prepare_for_deployment(SimSID.load_from_checkpoint(path, map_location=map_location))


def prepare_for_deployment(model: SimSID) -> SimSID:
    """Eval mode, refuse an unfitted post-processor, and switch threshold matching off.

    A post-processor that never saw validation data (NaN threshold, min or max) would make every
    normalised score and label meaningless. Threshold matching would apply the image threshold (a
    critic logit) to the residual map and saturate the heatmap; checkpoints trained before
    ``SimSID.configure_post_processor`` turned it off still carry it, so it is turned off here too.

    Args:
        model: a trained SimSID.

    Returns:
        The same model, in eval mode.
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
