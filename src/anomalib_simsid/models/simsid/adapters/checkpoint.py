"""What makes a file a SimSID checkpoint: one check, used by the model and by ``deploy/``.

A Lightning checkpoint does not record its model class, so a PaDiM or PatchCore checkpoint would load
into ``SimSID`` only to fail deep inside ``load_state_dict`` (or, worse, partly succeed). The file
must be a torch file, a Lightning checkpoint, and carry SimSID's hyper-parameters and its
generator/critic weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

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


def check_structure(checkpoint: dict[str, Any], path: str | Path = "the checkpoint") -> dict[str, Any]:
    """Raise :class:`NotSimSIDError` unless ``checkpoint`` has SimSID's hyper-parameters and weights.

    Only the structure is checked: a resumed run may start from a checkpoint saved before any
    validation, so a fitted threshold is not required here (deployment checks it on top).

    Returns:
        the checkpoint's hyper-parameters.
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
